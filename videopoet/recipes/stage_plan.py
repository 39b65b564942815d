"""Planning a recipe of stages: every step checked against its stage (inputs, references,
options, the config with its overrides merged), every problem reported at once, before
anything runs. No bundle is needed: the recipe makes one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from videopoet.core.errors import ConfigError
from videopoet.recipes.errors import RecipeError, one_of, problem
from videopoet.recipes.loader import LoadedRecipe
from videopoet.recipes.schema import Step, StepRef
from videopoet.recipes.stages import (
    CONFIGS,
    STAGE_OUTPUTS,
    STAGES,
    ConfigOptions,
    StageSpec,
    shipped_configs,
)

if TYPE_CHECKING:
    from videopoet.recipes.validate import Plan

# ---------------------------------------------------------------------------- values


@dataclass(frozen=True)
class PathInput:
    """A stage input given as a path (a folder or file made elsewhere), resolved."""

    path: Path

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path)}


def nest(overrides: dict[str, Any]) -> dict[str, Any]:
    """``{"train.steps": 4}`` and ``{"train": {"steps": 4}}`` alike, as nested mappings."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        node = out
        *parents, last = str(key).split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        value = nest(value) if isinstance(value, dict) else value
        node[last] = merge(node[last], value) if isinstance(node.get(last), dict) else value
    return out


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``, mapping by mapping (lists are replaced)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value of every leaf of nested mappings (an empty mapping is a leaf)."""
    if not isinstance(node, dict) or (not node and prefix):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out |= leaves(value, f"{prefix}.{key}" if prefix else str(key))
    return out


def put(node: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


# ---------------------------------------------------------------------------- planning


def plan_stages(loaded: LoadedRecipe, registry: Any) -> Plan:
    """The plan of a recipe of stages, every problem reported at once (no bundle needed)."""
    from videopoet.recipes.validate import Plan, PlannedStep, _check_ref

    recipe = loaded.recipe
    problems: list[ConfigError] = []
    if recipe.bundle is not None:
        expected = (
            "no bundle: a recipe of stages makes its own (give a stage a bundle as an input: "
            "steps.NAME.inputs.bundle=DIR)"
        )
        problems.append(problem("bundle", recipe.bundle, expected))
    names = list(recipe.steps)
    edges = {
        n: [v.step for v in s.inputs.values() if isinstance(v, StepRef)]
        for n, s in recipe.steps.items()
    }
    outputs: dict[str, tuple[str, ...]] = {}
    steps = []
    for index, (name, step) in enumerate(recipe.steps.items()):
        at = f"steps.{name}"
        spec = STAGES.get(str(step.stage))
        if step.kind != "stage":
            expected = (
                "a stage: a recipe of stages holds only stage steps (run task recipes on the "
                "bundle it makes)"
            )
            problems.append(problem(f"{at}.{step.kind}", getattr(step, step.kind), expected))
        elif spec is None:
            expected = one_of(step.stage, STAGES, "a pipeline stage")
            problems.append(problem(f"{at}.stage", step.stage, expected))
        outputs[name] = spec.outputs if spec is not None else STAGE_OUTPUTS  # no echo errors
        if spec is None:
            continue
        inputs: dict[str, PathInput | StepRef] = {}
        takes = {i.name: i for i in spec.inputs}
        shown = ", ".join(i.name + ("?" if i.optional else "") for i in spec.inputs) or "nothing"
        for key, value in step.inputs.items():
            where = f"{at}.inputs.{key}"
            if value is None:
                continue
            if key not in takes:
                expected = one_of(key, takes, f"an input of stage {spec.name}")
                problems.append(problem(where, value, expected))
            elif isinstance(value, StepRef):
                error = _check_ref(value, name, index, names, edges, outputs, where)
                if error is None and value.output != key:
                    error = problem(
                        where,
                        str(value),
                        f"an earlier stage's {key} (step {value.step}'s {value.output} is not)",
                    )
                if error is not None:
                    problems.append(error)
                else:
                    inputs[key] = value
            else:
                resolved = _path_input(loaded, value, key, where, problems)
                if resolved is not None:
                    inputs[key] = resolved
        for info in spec.inputs:
            if not info.optional and step.inputs.get(info.name) is None:
                expected = f"${{steps.NAME.{info.name}}} or a path; stage {spec.name} takes {shown}"
                problems.append(problem(f"{at}.inputs.{info.name}", None, expected))
        options, config = _options(loaded, spec, step, at, registry, problems)
        steps.append(
            PlannedStep(
                index=index,
                name=name,
                kind="stage",
                target=spec.name,
                inputs=inputs,  # type: ignore[arg-type]
                options=options,
                outputs=spec.outputs,
                description=step.description,
                config=config,
            )
        )
    if problems:
        raise RecipeError(recipe.name, problems)
    return Plan(loaded, steps, None)


def _path_input(
    loaded: LoadedRecipe, value: Any, kind: str, where: str, problems: list[ConfigError]
) -> PathInput | None:
    from videopoet.core.bundle import read_bundle_config

    if not isinstance(value, str) or not value.strip():
        problems.append(problem(where, value, f"${{steps.NAME.{kind}}} or a path to a {kind}"))
        return None
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = loaded.base_for(where) / path
    if kind == "bundle":
        try:
            read_bundle_config(path)
        except ConfigError as exc:
            problems.append(problem(where, value, f"{exc.expected} ({path})"))
            return None
    elif kind == "evaluation" and not path.is_file():
        problems.append(problem(where, value, f"an evaluation JSON file ({path})"))
        return None
    elif kind != "evaluation" and not path.is_dir():
        problems.append(problem(where, value, f"an existing {kind} folder ({path})"))
        return None
    return PathInput(path.resolve())


def _options(
    loaded: LoadedRecipe,
    spec: StageSpec,
    step: Step,
    at: str,
    registry: Any,
    problems: list[ConfigError],
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The validated options (paths resolved) and, for a config-driven stage, the merged
    config; ``({}, None)`` after a problem."""
    try:
        options = spec.options.model_validate(step.options)
    except ValidationError as exc:
        for error in exc.errors():
            key = ".".join(str(p) for p in error["loc"])
            expected = str(error["msg"]).removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                known = list(spec.options.model_fields)
                expected = one_of(key, known, f"an option of stage {spec.name}")
            problems.append(problem(f"{at}.options.{key}", error.get("input"), expected))
        return {}, None
    updates = {}
    for name in spec.options.PATHS:
        value = getattr(options, name)
        if value is not None and not Path(value).expanduser().is_absolute():
            updates[name] = str(loaded.base_for(f"{at}.options.{name}") / value)
    options = options.model_copy(update=updates)
    if spec.check is not None:
        for key, value, expected in spec.check(options, registry):
            problems.append(problem(f"{at}.options.{key}", value, expected))
    config = None
    if spec.config is not None:
        assert isinstance(options, ConfigOptions)
        config = _config(loaded, spec, options, at, registry, problems)
        if config is not None:
            options = options.model_copy(update={"config": str(_config_path(loaded, options, at))})
    return options.model_dump(mode="json"), config


def _config_path(loaded: LoadedRecipe, options: ConfigOptions, at: str) -> Path:
    """A ``.yaml``/``.yml`` value is a file (relative: like a recipe's files); anything else
    names a shipped config; a :class:`ConfigError` for neither."""
    value = options.config
    if value.endswith((".yaml", ".yml")):
        path = Path(value).expanduser()
        return path if path.is_absolute() else loaded.base_for(f"{at}.options.config") / path
    if value not in shipped_configs():
        raise ConfigError(
            f"{at}.options.config",
            value,
            one_of(value, shipped_configs(), "a YAML file (.yaml) or a shipped config"),
        )
    return CONFIGS / f"{value}.yaml"


def _config(
    loaded: LoadedRecipe,
    spec: StageSpec,
    options: ConfigOptions,
    at: str,
    registry: Any,
    problems: list[ConfigError],
) -> dict[str, Any] | None:
    from videopoet.core.tokenizer_training import load_config

    assert spec.config is not None
    where = f"{at}.options.config"
    try:
        path = _config_path(loaded, options, at)
        raw = load_config(path)
    except ConfigError as exc:
        problems.append(problem(where, options.config, exc.expected))
        return None
    overrides = nest(options.overrides)
    given = leaves(overrides) if overrides else {}
    found = False
    for key, value in given.items():
        owner = next((s for s in spec.config.sets if key == s or key.startswith(s + ".")), None)
        if owner is not None:
            what = spec.config.sets[owner][0]
            expected = f"no value: stage {spec.name} sets {owner} to {what}"
            problems.append(problem(f"{at}.options.overrides.{key}", value, expected))
            found = True
    if found:
        return None
    merged = merge(raw, overrides)
    checked = copy.deepcopy(merged)
    for key, (_, stand_in) in spec.config.sets.items():
        if stand_in is not None:
            put(checked, key, stand_in)
    try:
        spec.config.check(checked, registry)
    except ConfigError as exc:
        key = exc.field
        if any(k == key or k.startswith(key + ".") or key.startswith(k + ".") for k in given):
            problems.append(problem(f"{at}.options.overrides.{key}", exc.value, exc.expected))
        else:
            problems.append(problem(where, options.config, f"a valid config ({path}: {exc})"))
        return None
    return merged
