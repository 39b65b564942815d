"""The recipe schema (pydantic): what a recipe file may hold, field by field (docs/recipes.md).

A recipe is a mapping with ``name``, ``description``, ``bundle``, ``inputs`` (the recipe's own
files and literals, referenced as ``${inputs.NAME}``), ``defaults`` (sampling options every
step starts from) and ordered ``steps``: a mapping from step name to a :class:`Step`, in file
order. Every model forbids unknown keys, so a misspelled key is an error naming its dotted path.
A ``stage`` step is a pipeline stage (init, tokenize, train, ...; see
:mod:`videopoet.recipes.stages`): its ``inputs`` are earlier stages' outputs or folders, its
``options`` the stage's own.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from videopoet.core.declarations import parse_format

#: Step names are folder names in the run folder: letters, digits, ``_`` and ``-``.
STEP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")

#: Keys of configuration systems that import code (Hydra, torchtune): never accepted.
IMPORT_KEYS = ("_target_", "_component_", "_partial_", "_recursive_", "_convert_", "_args_")

#: What a step hands on: ``image`` is the first frame, ``last_frame`` the last one.
OUTPUTS = ("video", "image", "last_frame", "audio")

#: The kinds of step and the field that names each.
KINDS = ("task", "refiner", "repeat", "stage")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StepRef(_Strict):
    """An earlier step's output: ``${steps.animate.video}`` in a recipe, or this mapping."""

    step: str
    output: str

    def __str__(self) -> str:
        return f"${{steps.{self.step}.{self.output}}}"


class Sampling(_Strict):
    """Sampling options of a task or ``repeat`` step (``engine.generate``'s keywords); a
    sampling option left null takes the bundle's default for the step's task."""

    format: str | None = Field(
        default=None, description="FRAMESxHEIGHTxWIDTH; default: the bundle's"
    )
    cfg_scale: float | None = Field(
        default=None, ge=0.0, description="classifier-free guidance, 1 = off; null: the bundle's"
    )
    temperature: float | None = Field(
        default=None, ge=0.0, description="0 = greedy; null: the bundle's"
    )
    top_k: int | None = Field(default=None, ge=0, description="0 = off; null: the bundle's")
    top_p: float | None = Field(
        default=None, gt=0.0, le=1.0, description="1 = off; null: the bundle's"
    )
    seed: int | None = Field(default=0, description="null: a fresh seed each time the step runs")

    @field_validator("format")
    @classmethod
    def _format_parses(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(parse_format(str(value)))
        except Exception:  # noqa: BLE001 - any malformed format is the same error
            raise ValueError("a format FRAMESxHEIGHTxWIDTH, e.g. 17x64x64") from None


class Step(_Strict):
    """One step: exactly one of ``task``, ``refiner``, ``repeat`` or ``stage``, its inputs and
    options."""

    task: str | None = Field(default=None, description="a registered task")
    refiner: str | None = Field(default=None, description="a registered refiner")
    repeat: int | None = Field(
        default=None, ge=1, description="rounds of frame prediction that extend a video"
    )
    stage: str | None = Field(default=None, description="a pipeline stage (docs/recipes.md)")
    description: str = ""
    inputs: dict[str, Any] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("inputs")
    @classmethod
    def _references(cls, value: dict[str, Any]) -> dict[str, Any]:
        """``{step: NAME, output: OUTPUT}`` mappings (what ``${steps.NAME.OUTPUT}`` becomes)
        as :class:`StepRef`; anything else is checked against the step's inputs later."""
        return {k: StepRef(**v) if is_ref_mapping(v) else v for k, v in value.items()}

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            shown = ", ".join(given) if given else "none"
            raise ValueError(f"exactly one of task, refiner, repeat or stage (given: {shown})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def target(self) -> str:
        """The task, refiner or stage the step runs (``fp`` for ``repeat``)."""
        if self.kind == "repeat":
            return "fp"
        return str(getattr(self, self.kind))


class Recipe(_Strict):
    """A whole recipe, as loaded (interpolations resolved, overrides merged)."""

    name: str = Field(default="recipe", pattern=STEP_NAME.pattern)
    description: str = ""
    bundle: str | None = Field(default=None, description="the bundle folder (videopoet init DIR)")
    inputs: dict[str, Any] = Field(default_factory=dict)
    defaults: Sampling = Field(default_factory=Sampling)
    steps: dict[str, Step] = Field(min_length=1)

    @field_validator("steps")
    @classmethod
    def _step_names(cls, value: dict[str, Step]) -> dict[str, Step]:
        for name in value:
            if not STEP_NAME.match(str(name)):
                raise ValueError(
                    f"step name {name!r}: letters, digits, _ and - (it names the step's folder)"
                )
        return value


def is_ref_mapping(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == {"step", "output"}
        and all(isinstance(v, str) for v in value.values())
    )


def known_fields(loc: tuple[Any, ...]) -> list[str] | None:
    """The keys allowed where a pydantic error at ``loc`` (an unknown key) was found."""
    if len(loc) == 1:
        return list(Recipe.model_fields)
    if len(loc) == 2 and loc[0] == "defaults":
        return list(Sampling.model_fields)
    if len(loc) == 3 and loc[0] == "steps":
        return list(Step.model_fields)
    return None
