"""Validating a whole chain before anything runs, and the plan it yields.

Two passes, each reporting every problem at once (a :class:`RecipeError` whose problems name
the step and the field):

1. :func:`plan` needs only the plugin registry: each step's task or refiner is registered;
   its inputs are known to it, the required ones given, each of the right modality; references
   point to an earlier step's existing output (a later step or a cycle is an error); files lie
   inside the allowed folders, exist and hold the stream the input needs; options are known.
2. :func:`check_with_engine` needs the loaded bundle: the bundle can run each task, the format
   is one the bundle serves and the task takes, the layout fits the model, a referenced clip is
   long enough, a refiner is held by the bundle and takes the options given. It fills in each
   step's format, token counts and output shape (what ``videopoet run --dry-run`` prints).

A recipe of pipeline stages (``stage:`` steps) is planned by
:func:`videopoet.recipes.stage_plan.plan_stages` instead: it needs no bundle, and has no pass 2.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from videopoet.core.errors import ConfigError, LayoutError
from videopoet.core.generation_config import SAMPLING_KEYS, describe_settings
from videopoet.recipes.errors import RecipeError, one_of, problem
from videopoet.recipes.loader import LoadedRecipe
from videopoet.recipes.schema import OUTPUTS, Sampling, Step, StepRef
from videopoet.tasks.base import InputError, InputInfo

#: the inputs of the two step kinds that are not tasks
REFINER_INPUTS = (
    InputInfo("video", "video", False, "the clip to refine"),
    InputInfo("text", "text", True, "the prompt"),
)
REPEAT_INPUTS = (
    InputInfo("video", "video", False, "the clip to extend"),
    InputInfo("condition_frames", "number", True, "frames each round continues from: 1, 5, 9"),
)
#: default of ``condition_frames`` for ``repeat`` (Engine.extend's)
CONDITION_FRAMES = 5
#: the arguments of ``Refiner.refine`` the runner fills itself
REFINE_ARGUMENTS = ("self", "engine", "video", "text", "seed")

#: what kind of media each output is, and which outputs each input kind takes
OUTPUT_KIND = {"video": "video", "image": "image", "last_frame": "image", "audio": "audio"}
ACCEPTS = {"video": ("video",), "image": ("image", "video"), "audio": ("audio",)}
MEDIA_KINDS = ("image", "video", "audio")
BOX = re.compile(r"^\s*\d+\s*,\s*\d+\s*,\s*\d+\s*,\s*\d+\s*$")


@dataclass(frozen=True)
class FileInput:
    """A media file input, resolved to an absolute path inside the allowed folders."""

    path: Path
    kind: str

    def describe(self) -> dict[str, Any]:
        return {"file": str(self.path)}


@dataclass(frozen=True)
class Literal:
    """A text, number, choice or mask box given in the recipe."""

    value: Any

    def describe(self) -> dict[str, Any]:
        return {"value": self.value}


def describe_input(value: FileInput | Literal | StepRef) -> dict[str, Any]:
    if isinstance(value, StepRef):
        return {"step": value.step, "output": value.output}
    return value.describe()


@dataclass
class PlannedStep:
    """One step as it will run: inputs resolved, options merged with the defaults."""

    index: int
    name: str
    kind: str  # task | refiner | repeat | stage
    target: str  # the task (fp for repeat), refiner or stage
    inputs: dict[str, FileInput | Literal | StepRef]
    options: dict[str, Any]
    outputs: tuple[str, ...]
    #: outputs a step does not make but carries from an input: output -> input name
    carried: dict[str, str] = field(default_factory=dict)
    repeat: int | None = None
    description: str = ""
    #: a config-driven stage's training YAML with its overrides merged in
    config: dict[str, Any] | None = None
    # filled in by check_with_engine
    format: Any = None
    tokens: dict[str, int] | None = None
    shape: dict[str, Any] = field(default_factory=dict)
    #: the sampling settings a task or repeat step will use (its options over the bundle's)
    sampling: dict[str, Any] | None = None

    def refs(self) -> list[tuple[str, StepRef]]:
        return [(k, v) for k, v in self.inputs.items() if isinstance(v, StepRef)]

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, self.kind: self.target}
        if self.description:
            out["description"] = self.description
        if self.kind == "repeat":
            out |= {"repeat": self.repeat, "task": self.target}
        out["inputs"] = {k: describe_input(v) for k, v in self.inputs.items()}
        out["options"] = dict(self.options)
        if self.config is not None:
            out["config"] = self.config
        out["outputs"] = list(self.outputs)
        if self.carried:
            out["carried"] = dict(self.carried)
        if self.format is not None:
            out["format"] = str(self.format)
        if self.tokens is not None:
            out["tokens"] = dict(self.tokens)
        if self.shape:
            out["shape"] = dict(self.shape)
        if self.sampling is not None:
            out["sampling"] = dict(self.sampling)
        return out


@dataclass
class Plan:
    """A validated recipe, step by step, in the order the steps run."""

    loaded: LoadedRecipe
    steps: list[PlannedStep]
    bundle: Path | None
    checked_with_engine: bool = False

    @property
    def name(self) -> str:
        return self.loaded.recipe.name

    @property
    def stages(self) -> bool:
        """Whether this is a recipe of pipeline stages (which needs no bundle)."""
        return bool(self.steps) and all(s.kind == "stage" for s in self.steps)

    def step(self, name: str) -> PlannedStep:
        return next(s for s in self.steps if s.name == name)

    def describe(self) -> dict[str, Any]:
        recipe = self.loaded.recipe
        return {
            "recipe": recipe.name,
            "description": recipe.description,
            "source": str(self.loaded.source),
            "bundle": str(self.bundle) if self.bundle is not None else None,
            "overrides": list(self.loaded.overrides),
            "steps": [s.describe() for s in self.steps],
        }

    def text(self) -> str:
        """The plan as ``videopoet run --dry-run`` prints it."""
        recipe = self.loaded.recipe
        lines = [f"recipe {recipe.name}: {recipe.description}".rstrip(": ")]
        if not self.stages:
            lines.append(f"bundle: {self.bundle}")
        for step in self.steps:
            if step.kind == "stage":
                lines += _stage_lines(step)
                continue
            what = f"{step.kind} {step.target}"
            if step.kind == "repeat":
                what = f"repeat {step.repeat} x fp"
            head = f"{step.index + 1}. {step.name}: {what}"
            if step.format is not None:
                head += f" at {step.format}"
            if step.tokens:
                t = step.tokens
                head += f", {t['prefix']} prefix + {t['target']} target tokens"
                if "rounds" in t:
                    head += f" per round x {t['rounds']}"
            lines.append(head)
            for key, value in step.inputs.items():
                lines.append(f"     {key}: {_shown(value)}")
            options = ", ".join(f"{k}={v}" for k, v in step.options.items() if v is not None)
            if options:
                lines.append(f"     options: {options}")
            if step.sampling is not None:
                lines.append(f"     sampling: {describe_settings(step.sampling)}")
            lines.append(f"     -> {', '.join(step.outputs)}{_shape_text(step.shape)}")
        return "\n".join(lines)


def _stage_lines(step: PlannedStep) -> list[str]:
    from videopoet.recipes.stage_plan import leaves

    lines = [f"{step.index + 1}. {step.name}: stage {step.target}"]
    for key, value in step.inputs.items():
        lines.append(f"     {key}: {_shown(value)}")
    options = {k: v for k, v in step.options.items() if k != "overrides" and v not in (None, {})}
    if options:
        lines.append("     options: " + ", ".join(f"{k}={v}" for k, v in options.items()))
    overrides = leaves(step.options.get("overrides") or {})
    if overrides:
        lines.append("     overrides: " + ", ".join(f"{k}={v}" for k, v in overrides.items()))
    lines.append(f"     -> {', '.join(step.outputs)}")
    return lines


def _shown(value: Any) -> str:
    if isinstance(value, StepRef):
        return str(value)
    if not isinstance(value, FileInput | Literal):  # a stage's path input
        return str(value.path)
    if isinstance(value, FileInput):
        return f"{value.kind} file {value.path}"
    return repr(value.value)


def _shape_text(shape: dict[str, Any]) -> str:
    parts = []
    video = shape.get("video")
    if video:
        parts.append("video " + "x".join("?" if v is None else str(v) for v in video))
    if shape.get("audio_seconds") is not None:
        parts.append(f"audio {shape['audio_seconds']:g} s")
    return f" ({', '.join(parts)})" if parts else ""


# ---------------------------------------------------------------------------- pass 1


def plan(loaded: LoadedRecipe, registry: Any, *, need_bundle: bool = True) -> Plan:
    """Check the chain against the registry (no model is loaded, no media decoded)."""
    recipe = loaded.recipe
    if any(step.kind == "stage" for step in recipe.steps.values()):
        from videopoet.recipes.stage_plan import plan_stages

        return plan_stages(loaded, registry)
    problems: list[ConfigError] = []
    bundle = _bundle(loaded, problems) if need_bundle or recipe.bundle is not None else None
    names = list(recipe.steps)
    edges = {
        n: [v.step for v in s.inputs.values() if isinstance(v, StepRef)]
        for n, s in recipe.steps.items()
    }
    steps: list[PlannedStep] = []
    outputs: dict[str, tuple[str, ...]] = {}
    for index, (name, step) in enumerate(recipe.steps.items()):
        at = f"steps.{name}"
        infos = _inputs_of(step, registry, at, problems)
        options = _options(step, recipe.defaults, at, problems)
        inputs: dict[str, FileInput | Literal | StepRef] = {}
        for key, value in step.inputs.items():
            where = f"{at}.inputs.{key}"
            if value is None:
                continue
            if infos is not None and key not in infos:
                problems.append(
                    problem(where, value, one_of(key, infos, f"an input of {step.target}"))
                )
                continue
            if isinstance(value, StepRef):  # the schema made ${steps.NAME.OUTPUT} one
                error = _check_ref(value, name, index, names, edges, outputs, where)
                if error is None and infos is not None:
                    error = _check_modality(value, infos[key], where)
                if error is not None:
                    problems.append(error)
                else:
                    inputs[key] = value
                continue
            if isinstance(value, dict):
                problems.append(
                    problem(where, str(value), "a file, a literal or ${steps.NAME.OUTPUT}")
                )
                continue
            kind = infos[key].kind if infos is not None else "text"
            resolved = _literal_or_file(loaded, value, kind, where, problems)
            if resolved is not None:
                inputs[key] = resolved
        if infos is not None:
            for info in infos.values():
                if not info.optional and step.inputs.get(info.name) is None:
                    problems.append(
                        problem(
                            f"{at}.inputs.{info.name}",
                            None,
                            f"a value ({info.kind}); {step.target} takes {_takes(infos)}",
                        )
                    )
        made, carried = _outputs(step, infos, inputs, outputs, registry)
        outputs[name] = made
        steps.append(
            PlannedStep(
                index=index,
                name=name,
                kind=step.kind,
                target=step.target,
                inputs=inputs,
                options=options,
                outputs=made,
                carried=carried,
                repeat=step.repeat,
                description=step.description,
            )
        )
    if problems:
        raise RecipeError(recipe.name, problems)
    return Plan(loaded, steps, bundle)


def _takes(infos: dict[str, InputInfo]) -> str:
    return ", ".join(str(i) for i in infos.values())


def _bundle(loaded: LoadedRecipe, problems: list[ConfigError]) -> Path | None:
    from videopoet.core.bundle import read_bundle_config

    value = loaded.recipe.bundle
    if value is None:
        problems.append(
            problem("bundle", None, "a bundle folder; give it on the command line: bundle=DIR")
        )
        return None
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = loaded.base_for("bundle") / path
    try:
        read_bundle_config(path)
    except ConfigError as exc:
        problems.append(problem("bundle", value, f"{exc.expected} ({path})"))
        return None
    return path.resolve()


def _inputs_of(
    step: Step, registry: Any, at: str, problems: list[ConfigError]
) -> dict[str, InputInfo] | None:
    """The step's inputs by name, or None when its task or refiner is not registered."""
    if step.kind == "refiner":
        if step.refiner not in registry.refiners:
            problems.append(
                problem(
                    f"{at}.refiner",
                    step.refiner,
                    one_of(step.refiner, sorted(registry.refiners), "a registered refiner"),
                )
            )
            return None
        return {i.name: i for i in REFINER_INPUTS}
    if step.kind == "repeat":
        if "fp" not in registry.tasks:
            problems.append(problem(f"{at}.repeat", step.repeat, "the fp task to be registered"))
            return None
        return {i.name: i for i in REPEAT_INPUTS}
    if step.task not in registry.tasks:
        problems.append(
            problem(
                f"{at}.task",
                step.task,
                one_of(step.task, list(registry.tasks), "a registered task"),
            )
        )
        return None
    return {i.name: i for i in registry.task_behaviour(step.task).inputs()}


def _options(step: Step, defaults: Sampling, at: str, problems: list[ConfigError]) -> dict:
    merged = defaults.model_dump()
    if step.kind == "refiner":
        out = {"seed": merged["seed"]}
        for key, value in step.options.items():
            if isinstance(value, dict):
                problems.append(problem(f"{at}.options.{key}", str(value), "a literal value"))
            elif (
                key == "seed"
                and value is not None
                and (isinstance(value, bool) or not isinstance(value, int))
            ):
                problems.append(problem(f"{at}.options.seed", value, "an integer or null"))
            else:
                out[key] = value
        return out
    try:
        given = Sampling.model_validate(step.options)
    except ValidationError as exc:
        for error in exc.errors():
            key = ".".join(str(p) for p in error["loc"])
            expected = str(error["msg"]).removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                expected = one_of(
                    key, list(Sampling.model_fields), f"an option of a {step.kind} step"
                )
            problems.append(problem(f"{at}.options.{key}", error.get("input"), expected))
        return merged
    merged.update({k: getattr(given, k) for k in given.model_fields_set})
    return merged


def _check_ref(
    ref: StepRef,
    name: str,
    index: int,
    names: list[str],
    edges: dict[str, list[str]],
    outputs: dict[str, tuple[str, ...]],
    where: str,
) -> ConfigError | None:
    if ref.step not in names:
        return problem(where, str(ref), one_of(ref.step, names[:index], "an earlier step"))
    if names.index(ref.step) >= index:
        cycle = _cycle(name, ref.step, edges)
        if cycle is not None:
            return problem(where, str(ref), f"no cycle: {' -> '.join(cycle)}")
        return problem(
            where, str(ref), f"an earlier step; {ref.step} runs after {name} (steps run in order)"
        )
    made = outputs.get(ref.step)
    if made is not None and ref.output not in made:
        what = f"an output of step {ref.step}"
        return problem(where, str(ref), one_of(ref.output, made, what))
    if made is None and ref.output not in OUTPUTS:
        return problem(where, str(ref), one_of(ref.output, OUTPUTS, "an output"))
    return None


def _cycle(start: str, first: str, edges: dict[str, list[str]]) -> list[str] | None:
    """The path start -> first -> ... -> start along references, if there is one."""
    stack, seen = [[start, first]], set()
    while stack:
        path = stack.pop()
        if path[-1] == start:
            return path
        if path[-1] in seen:
            continue
        seen.add(path[-1])
        stack += [path + [nxt] for nxt in edges.get(path[-1], [])]
    return None


def _check_modality(ref: StepRef, info: InputInfo, where: str) -> ConfigError | None:
    if info.kind not in ACCEPTS:
        return problem(
            where, str(ref), f"a literal {info.kind} (a step's outputs are video, image or audio)"
        )
    got = OUTPUT_KIND.get(ref.output, "?")
    if got not in ACCEPTS[info.kind]:
        return problem(
            where, str(ref), f"{_a(info.kind)}: step {ref.step}'s {ref.output} is {_a(got)}"
        )
    return None


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _literal_or_file(
    loaded: LoadedRecipe, value: Any, kind: str, where: str, problems: list[ConfigError]
) -> FileInput | Literal | None:
    if kind == "mask":
        if isinstance(value, list | tuple):
            if len(value) == 4 and all(isinstance(v, int) for v in value):
                return Literal(tuple(value))
            problems.append(problem(where, value, "a box [top, left, height, width] in pixels"))
            return None
        if isinstance(value, str) and BOX.match(value):
            return Literal(value)
        kind = "image"  # a mask image file (white = hidden)
    if kind in MEDIA_KINDS:
        if not isinstance(value, str | Path) or not str(value).strip():
            expected = f"{_a(kind)} file path or ${{steps.NAME.OUTPUT}}"
            problems.append(problem(where, value, expected))
            return None
        return _file(loaded, str(value), kind, where, problems)
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            problems.append(problem(where, value, "a number"))
            return None
        try:
            float(value)
        except ValueError:
            problems.append(problem(where, value, "a number"))
            return None
        return Literal(value)
    if not isinstance(value, str) or (kind == "text" and not value.strip()):
        problems.append(problem(where, value, f"a non-empty {kind} string"))
        return None
    return Literal(value)


def _file(
    loaded: LoadedRecipe, value: str, kind: str, where: str, problems: list[ConfigError]
) -> FileInput | None:
    from videopoet.data.media import MediaError, probe

    path = Path(value).expanduser()
    if not path.is_absolute():
        path = loaded.base_for(where) / path
    real = path.resolve()  # symlinks and .. followed: what would really be read
    roots = loaded.roots
    if not any(real.is_relative_to(root) for root in roots):
        shown = ", ".join(str(r) for r in roots)
        problems.append(
            problem(
                where, value, f"a file inside the allowed folders ({shown}); add one with --allow"
            )
        )
        return None
    if not real.is_file():
        problems.append(problem(where, value, f"an existing {kind} file ({real})"))
        return None
    try:
        info = probe(real)
    except MediaError as exc:
        problems.append(problem(where, value, f"a readable {kind} file ({exc.detail})"))
        return None
    if kind in ("image", "video") and not info.has_video:
        problems.append(problem(where, value, f"{_a(kind)}: the file has no picture"))
        return None
    if kind == "audio" and not info.has_audio:
        problems.append(problem(where, value, "audio: the file has no sound"))
        return None
    return FileInput(real, kind)


def _outputs(
    step: Step,
    infos: dict[str, InputInfo] | None,
    inputs: dict[str, FileInput | Literal | StepRef],
    earlier: dict[str, tuple[str, ...]],
    registry: Any,
) -> tuple[tuple[str, ...], dict[str, str]]:
    """What the step hands on, and which of it it carries over from an input: a step that
    makes no video keeps the video it was given (video-to-audio's clip, now with sound), one
    that makes no sound keeps the sound it was given; a refiner keeps its clip's sound."""
    visual = ("video", "image", "last_frame")
    if infos is None:
        return OUTPUTS, {}
    carried: dict[str, str] = {}
    if step.kind == "repeat":
        return visual, {}
    if step.kind == "refiner":
        made = list(visual)
        ref = inputs.get("video")
        if isinstance(ref, StepRef) and "audio" in earlier.get(ref.step, ()):
            made.append("audio")
            carried["audio"] = "video"
        return tuple(made), carried
    target = registry.task(step.task).target
    made = []
    if target.visual == "video":
        made += visual
    elif target.visual == "image":
        made.append("image")
    if target.audio:
        made.append("audio")
    if target.visual is None:
        key = next((k for k in inputs if k in infos and infos[k].kind == "video"), None)
        if key is not None:
            made += visual
            carried["video"] = key
    if not target.audio:
        key = next((k for k in inputs if k in infos and infos[k].kind == "audio"), None)
        if key is not None:
            made.append("audio")
            carried["audio"] = key
    return tuple(made), carried


# ---------------------------------------------------------------------------- pass 2


def check_with_engine(plan: Plan, engine: Any) -> Plan:
    """Check the plan against the loaded bundle; fills each step's format, tokens and shape."""
    problems: list[ConfigError] = []
    for step in plan.steps:
        if step.kind == "refiner":
            _check_refiner(step, plan, engine, problems)
        else:
            _check_task(step, plan, engine, problems)
    if problems:
        raise RecipeError(plan.name, problems)
    plan.checked_with_engine = True
    return plan


def _upstream_frames(plan: Plan, ref: StepRef) -> int | None:
    video = plan.step(ref.step).shape.get("video")
    if not video:
        return None
    return 1 if ref.output in ("image", "last_frame") else video[0]


def _check_task(step: PlannedStep, plan: Plan, engine: Any, problems: list[ConfigError]) -> None:
    at = f"steps.{step.name}"
    task = step.target
    literal = {k: v.value for k, v in step.inputs.items() if isinstance(v, Literal)}
    if step.kind == "repeat":
        literal = {"condition_frames": literal.get("condition_frames", CONDITION_FRAMES)}
    try:
        names = {k: literal.get(k, "given") for k in step.inputs}
        engine.check_inputs(task, {"video": "given"} if step.kind == "repeat" else names)
    except ConfigError as exc:
        field = "repeat" if step.kind == "repeat" else "task"
        problems.append(problem(f"{at}.{field}", task, exc.expected))
        return
    behaviour = engine.task(task)
    spec = behaviour.spec
    try:
        fmt = engine.pick_format(spec, step.options.get("format"))
    except ConfigError as exc:
        problems.append(problem(f"{at}.options.format", exc.value, exc.expected))
        return
    try:  # the step's options over the bundle's defaults for the task
        given = {k: step.options.get(k) for k in SAMPLING_KEYS}
        step.sampling = engine.sampling_for(task, **given)
    except ConfigError as exc:  # a cfg_scale for a task with no condition to drop
        problems.append(problem(f"{at}.options.{exc.field}", exc.value, exc.expected))
    present: set[str] = set()
    frames: dict[str, int] = {}
    needs: dict[str, int] = {}
    if spec.prefix.text and "text" in step.inputs:
        present.add("text")
    if spec.prefix.audio and "audio" in step.inputs:
        present.add("audio")
    for entry in spec.prefix.visual_inputs:
        key = "video" if step.kind == "repeat" else behaviour.input_key(entry)
        if key not in step.inputs:
            continue
        present.add(entry.name)
        if entry.kind == "image":
            needs[key] = 1
            continue
        try:
            frames[entry.name] = needs[key] = behaviour.input_frames(entry, literal, fmt)
        except InputError as exc:
            problems.append(problem(f"{at}.inputs.{exc.name}", exc.value, exc.expected))
            return
    try:
        layout = engine.layout(spec, fmt, present, frames)
    except LayoutError as exc:
        problems.append(problem(f"{at}.options.format", str(fmt), str(exc)))
        return
    for key, ref in step.refs():
        have = _upstream_frames(plan, ref)
        if key in needs and have is not None and have < needs[key]:
            problems.append(
                problem(
                    f"{at}.inputs.{key}",
                    str(ref),
                    f"a clip of at least {needs[key]} frames; step {ref.step} makes {have}",
                )
            )
    step.format = fmt
    step.tokens = {
        "prefix": layout.prefix_length,
        "target": layout.target_length,
        "total": layout.total_length,
    }
    size = [fmt.height, fmt.width]
    if step.kind == "repeat":
        step.tokens["rounds"] = int(step.repeat or 1)
        source = step.inputs.get("video")
        have = _upstream_frames(plan, source) if isinstance(source, StepRef) else None
        grow = (step.repeat or 1) * (fmt.frames - frames.get("visual", CONDITION_FRAMES))
        step.shape = {"video": [None if have is None else have + grow, *size]}
        return
    if spec.target.visual == "video":
        step.shape["video"] = [fmt.frames, *size]
    elif spec.target.visual == "image":
        step.shape["video"] = [1, *size]
    elif "video" in step.carried:
        step.shape["video"] = [needs.get(step.carried["video"], fmt.frames), *size]
    if spec.target.audio or "audio" in step.carried:
        step.shape["audio_seconds"] = fmt.seconds


def _check_refiner(step: PlannedStep, plan: Plan, engine: Any, problems: list[ConfigError]) -> None:
    at = f"steps.{step.name}"
    held = getattr(engine, "refiners", {}) or {}
    if step.target not in held:
        shown = ", ".join(sorted(held)) or "none"
        problems.append(
            problem(f"{at}.refiner", step.target, f"a refiner this bundle holds (it holds {shown})")
        )
        return
    method = getattr(held[step.target], "refine", None)
    if method is not None:
        try:
            params = inspect.signature(method).parameters
        except (TypeError, ValueError):  # a builtin without a signature: take it on trust
            params = {}
        takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
        known = [n for n in params if n not in REFINE_ARGUMENTS]
        if params and not takes_any:
            for key, value in step.options.items():
                if key != "seed" and key not in known:
                    expected = one_of(key, known, f"an option of refiner {step.target}")
                    problems.append(problem(f"{at}.options.{key}", value, expected))
    source = step.inputs.get("video")
    if isinstance(source, StepRef):
        video = plan.step(source.step).shape.get("video")
        if video:
            frames = 1 if source.output in ("image", "last_frame") else video[0]
            step.shape["video"] = [frames, None, None]
        if "audio" in step.carried:
            step.shape["audio_seconds"] = plan.step(source.step).shape.get("audio_seconds")
