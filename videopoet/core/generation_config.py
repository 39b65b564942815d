"""A bundle's recommended sampling settings: the ``generation`` section of ``bundle.json``.

As a Hugging Face model carries ``generation_config.json``, a bundle carries the settings it
samples best with (docs/engine.md, "Sampling defaults")::

    "generation": {"cfg_scale": 3.0, "temperature": 1.0, "top_k": null, "top_p": null,
                   "tasks": {"fp": {"temperature": 0.8}}}

``Engine.generate`` and everything that calls it take ``None`` for "the bundle's default for
this task": the task's entry in ``tasks`` (only the keys it gives), else the bundle-level value.
A bundle without the section samples as before it existed: guidance off (``cfg_scale`` 1),
temperature 1, no top-k or top-p. The bundle-level ``cfg_scale`` is a default for the tasks
that have a condition to drop for guidance; the others use 1.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_serializer,
)

from videopoet.core.errors import ConfigError

#: the sampling keywords of ``Engine.generate`` a bundle can give defaults for
SAMPLING_KEYS = ("cfg_scale", "temperature", "top_k", "top_p")
#: what each field takes, for error messages
EXPECTED = {
    "cfg_scale": "a finite number >= 0 (1 = no guidance)",
    "temperature": "a finite number >= 0 (0 = greedy)",
    "top_k": "an integer >= 1, or null (no top-k)",
    "top_p": "a probability in (0, 1], or null (no top-p)",
    "tasks": "a mapping from task name to its settings",
}


class TaskSampling(BaseModel):
    """One task's overrides: only the keys given replace the bundle-level values (``top_k:
    null`` switches a bundle-level top-k off for the task)."""

    model_config = ConfigDict(extra="forbid")

    cfg_scale: float = Field(1.0, ge=0, allow_inf_nan=False)
    temperature: float = Field(1.0, ge=0, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)

    @model_serializer(mode="wrap")
    def _only_given(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if k in self.model_fields_set}


class GenerationDefaults(BaseModel):
    """The ``generation`` section of ``bundle.json``."""

    model_config = ConfigDict(extra="forbid")

    cfg_scale: float = Field(
        1.0,
        ge=0,
        allow_inf_nan=False,
        description="classifier-free guidance (1 = off), for tasks with a condition to drop",
    )
    temperature: float = Field(1.0, ge=0, allow_inf_nan=False, description="0 = greedy")
    top_k: int | None = Field(None, ge=1, description="sample among the k likeliest tokens")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling")
    tasks: dict[str, TaskSampling] = Field(
        default_factory=dict, description="task name -> the settings it overrides"
    )

    def for_task(self, task: str) -> dict[str, Any]:
        """The four settings of ``task``: its overrides over the bundle-level values."""
        settings = {k: getattr(self, k) for k in SAMPLING_KEYS}
        override = self.tasks.get(task)
        if override is not None:
            settings |= {k: getattr(override, k) for k in override.model_fields_set}
        return settings


def parse_generation(raw: Any, where: str = "generation") -> GenerationDefaults:
    """``raw`` (a mapping) validated; a problem is a :class:`ConfigError` naming
    ``where.field``, the value and what was expected."""
    if isinstance(raw, GenerationDefaults):
        return raw
    if not isinstance(raw, dict):
        expected = f"a mapping of {', '.join((*SAMPLING_KEYS, 'tasks'))}"
        raise ConfigError(where, raw, expected)
    try:
        return GenerationDefaults.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [str(p) for p in error["loc"]]
        expected = EXPECTED.get(loc[-1], error["msg"]) if loc else error["msg"]
        if error["type"] == "extra_forbidden":
            model = TaskSampling if len(loc) > 1 else GenerationDefaults
            known = list(model.model_fields)
            expected = f"one of {', '.join(known)}"
        raise ConfigError(".".join([where, *loc]), error.get("input"), expected) from None


def check_tasks(defaults: GenerationDefaults, registry: Any, where: str = "generation") -> None:
    """Every task ``defaults`` names is registered, and a task with nothing to drop for
    guidance is given no ``cfg_scale`` other than 1."""
    from videopoet.core.errors import UnknownNameError

    for name, override in defaults.tasks.items():
        if name not in registry.tasks:
            hint = str(UnknownNameError("task", name, list(registry.tasks)))
            raise ConfigError(f"{where}.tasks", name, f"a registered task ({hint})")
        if (
            "cfg_scale" in override.model_fields_set
            and override.cfg_scale != 1.0
            and not registry.task(name).cfg_drop
        ):
            raise ConfigError(
                f"{where}.tasks.{name}.cfg_scale",
                override.cfg_scale,
                f"1.0: task {name} has no condition to drop for guidance",
            )


def apply_overrides(
    base: GenerationDefaults | None, items: list[str] | None, where: str = "generation"
) -> GenerationDefaults | None:
    """``base`` with ``KEY=VALUE`` (bundle-level) and ``TASK.KEY=VALUE`` (one task) items
    applied, as ``videopoet init`` and ``export`` take them (``--generation cfg_scale=3``).
    A value is read as JSON (``3``, ``0.8``, ``null``; ``none`` is null too). No items: ``base``
    unchanged (None stays None)."""
    if not items:
        return base
    data = base.model_dump(mode="json") if base is not None else {}
    example = "KEY=VALUE or TASK.KEY=VALUE, e.g. cfg_scale=3 or t2v.temperature=0.8"
    for item in items:
        key, sep, text = item.partition("=")
        parts = [p.strip() for p in key.split(".")]
        if parts[:1] == ["tasks"]:
            parts = parts[1:]
        if not sep or len(parts) not in (1, 2) or not all(parts):
            raise ConfigError(where, item, example)
        if parts[-1] not in SAMPLING_KEYS:
            expected = f"a key among {', '.join(SAMPLING_KEYS)}"
            raise ConfigError(f"{where}.{key.strip()}", text, expected)
        value = _value(text.strip())
        if len(parts) == 1:
            data[parts[0]] = value
        else:
            data.setdefault("tasks", {}).setdefault(parts[0], {})[parts[1]] = value
    return parse_generation(data, where)


def _value(text: str) -> Any:
    if text.lower() in ("none", "null", ""):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text  # refused by the schema, named with its field


def describe_settings(settings: dict[str, Any]) -> str:
    """One task's settings as text: ``cfg_scale 3, temperature 1`` (unset top-k/p left out)."""
    return ", ".join(
        f"{k} {settings[k]:g}" if isinstance(settings[k], float) else f"{k} {settings[k]}"
        for k in SAMPLING_KEYS
        if settings.get(k) is not None
    )


def describe_sampling(per_task: dict[str, dict[str, Any]]) -> str:
    """``{task: settings}`` as one line, tasks with the same settings together:
    ``cfg_scale 3, temperature 1 (t2v, t2i); cfg_scale 1, temperature 1 (fp)``."""
    groups: dict[str, list[str]] = {}
    for task, settings in per_task.items():
        groups.setdefault(describe_settings(settings), []).append(task)
    return "; ".join(f"{shown} ({', '.join(tasks)})" for shown, tasks in groups.items())


def add_sampling_arguments(parser: Any, cfg_help: str = "guidance, 1 = off") -> None:
    """``--cfg-scale``, ``--temperature``, ``--top-k``, ``--top-p`` on an argparse parser, each
    defaulting to None: the bundle's ``generation`` setting."""
    parser.add_argument(
        "--cfg-scale", type=float, default=None, help=f"{cfg_help} (default: the bundle's)"
    )
    parser.add_argument(
        "--temperature", type=float, default=None, help="0 = greedy (default: the bundle's)"
    )
    parser.add_argument("--top-k", type=int, default=None, help="0 = off (default: the bundle's)")
    parser.add_argument("--top-p", type=float, default=None, help="1 = off (default: the bundle's)")
