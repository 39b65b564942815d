"""Recipe errors: every problem of a recipe at once, each naming its step and field."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from videopoet.core.errors import ConfigError, VideoPoetError


class RecipeError(VideoPoetError, ValueError):
    """A recipe that cannot run; ``problems`` holds one :class:`ConfigError` per problem, whose
    ``field`` is the dotted path in the recipe (``steps.stylize.inputs.video``)."""

    def __init__(self, recipe: str, problems: list[ConfigError]) -> None:
        self.recipe, self.problems = recipe, list(problems)
        count = len(self.problems)
        lines = [f"recipe {recipe}: {count} problem{'s' if count != 1 else ''}"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))

    @property
    def fields(self) -> list[str]:
        return [p.field for p in self.problems]


class StepError(VideoPoetError, ValueError):
    """A step that failed while running (its inputs passed validation): names the step."""

    def __init__(self, step: str, target: str, cause: Exception) -> None:
        self.step, self.target, self.cause = step, target, cause
        super().__init__(f"step {step} ({target}): {cause}")


def problem(field: str, value: Any, expected: str) -> ConfigError:
    """One problem; a step reference is shown as written (``${steps.a.video}``)."""
    if value is not None and not isinstance(value, str | int | float | bool | list | tuple):
        value = str(value)
    return ConfigError(field, value, expected)


def one_of(name: Any, known: Iterable[str], what: str) -> str:
    """``what: a, b, c; did you mean b?``: the expected text for an unknown name."""
    known = list(known)
    close = difflib.get_close_matches(str(name), known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"{what}: {', '.join(known) or 'none'}{hint}"


class StageStopped(VideoPoetError):
    """A stage that ended before its work was done (a time limit, ``train.stop_at``): its
    progress is kept, and running the same command again continues it."""

    def __init__(self, step: str, stage: str, why: str) -> None:
        self.step, self.stage, self.why = step, stage, why
        super().__init__(f"step {step} (stage {stage}): {why}; run the same command again to go on")
