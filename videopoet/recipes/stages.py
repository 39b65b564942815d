"""Pipeline stages: recipe steps that make and train a bundle (``stage: NAME``).

A stage runs, in-process, the function behind one command: ``init`` (``videopoet init``),
``tokenize``, ``train``, ``prepare-refiner`` (``videopoet train-refiner --prepare``),
``train-refiner``, ``add-refiner``, ``evaluate``, and ``model-card`` (a MODEL_CARD.md from the
run's records). Each declares here its inputs (an earlier stage's output of the same name, e.g.
``bundle: ${steps.init.bundle}``, or a folder given as a path), its outputs and a pydantic
model of its options. A stage driven by a training YAML takes ``config`` (a YAML path or a
config shipped in the project's ``configs/``, by name: ``lm/tiny``) and ``overrides`` (a
mapping merged over it, as ``key=value`` overrides are), checked by the command's own schema;
the keys a stage fills itself (its bundle, its output folder) cannot be overridden.

Planning is in :mod:`videopoet.recipes.stage_plan`, what each stage does in
:mod:`videopoet.recipes.stage_work`, running them in :mod:`videopoet.recipes.stage_runner`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from videopoet.core.errors import ConfigError
from videopoet.recipes.errors import one_of

#: the project's training configs, named by their path below it without ``.yaml``
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


# ---------------------------------------------------------------------------- options


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: options holding a path, resolved like a recipe's files (recipe folder or cwd)
    PATHS: ClassVar[tuple[str, ...]] = ()


class InitOptions(_Options):
    """``videopoet init``'s arguments."""

    PATHS: ClassVar[tuple[str, ...]] = ("visual_tokenizer", "audio_tokenizer")

    preset: str = "tiny"
    visual_tokenizer: str | None = Field(None, description="default (tiny): the committed one")
    audio_tokenizer: str | None = Field(None, description="default (tiny): the committed one")
    text_encoder: str = "hash"
    text_options: dict[str, Any] = Field(default_factory=dict)
    formats: list[str] | None = None
    seed: int = 0
    model: dict[str, Any] = Field(
        default_factory=dict, description="LM settings over the preset's (ModelConfig fields)"
    )


class ConfigOptions(_Options):
    """A stage driven by a training YAML."""

    config: str = Field(description="a YAML file, or a shipped config's name (lm/tiny)")
    overrides: dict[str, Any] = Field(default_factory=dict)


class AddRefinerOptions(_Options):
    description: str | None = Field(None, description="default: trained by the recipe NAME")


class EvaluateOptions(_Options):
    """``videopoet evaluate``'s options."""

    seeds: int = Field(8, ge=1)
    tasks: list[str] | None = None
    format: str | None = None
    #: sampling: None takes the bundle's defaults (its ``generation`` section)
    temperature: float | None = Field(None, ge=0)
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    cfg_scale: float | None = Field(None, ge=0)
    untrained: bool = True
    init_seed: int = 0
    threads: int | None = Field(None, ge=1)
    fvd: bool = False
    fvd_clips: int = Field(16, ge=2)


class CardOptions(_Options):
    title: str | None = Field(None, description="default: the recipe's name")


# ---------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class StageInput:
    """An input: the earlier stage's output of the same name, or a path to one."""

    name: str  # bundle, shards, tokens, refiner_dir or evaluation
    optional: bool = False
    help: str = ""


@dataclass(frozen=True)
class ConfigSchema:
    """How a config-driven stage checks its merged YAML; ``sets`` are the keys it fills in
    (dotted key -> (what fills it, a stand-in while checking or None to keep the config's))."""

    check: Callable[[dict[str, Any], Any], None]
    sets: dict[str, tuple[str, Any]]


@dataclass(frozen=True)
class StageSpec:
    name: str
    command: str
    description: str
    inputs: tuple[StageInput, ...]
    outputs: tuple[str, ...]
    options: type[_Options]
    config: ConfigSchema | None = None
    #: checks of the options that need the registry: ``[(field, value, expected)]``
    check: Callable[[Any, Any], list[tuple[str, Any, str]]] | None = field(default=None)
    #: whether a second attempt continues the first one's work (checkpoints, token chunks)
    resumes: bool = False


def _check_tokenize(raw: dict[str, Any], registry: Any) -> None:
    from videopoet.core.lm_training import TokenizeConfig
    from videopoet.core.tokenizer_training import validate_section

    config = validate_section(TokenizeConfig, raw, "")
    config.source()
    for task in config.tasks or []:
        if task not in registry.tasks:
            raise ConfigError("tasks", task, one_of(task, registry.tasks, "registered tasks"))


def _check_train(raw: dict[str, Any], registry: Any) -> None:
    from videopoet.core.lm_training import LMTrainingConfig
    from videopoet.core.tokenizer_training import validate_section

    config = validate_section(LMTrainingConfig, raw, "")
    for task in config.mixture or {}:
        if task not in registry.tasks:
            where = f"mixture.{task}"
            raise ConfigError(where, task, one_of(task, registry.tasks, "registered tasks"))


def _check_refiner(raw: dict[str, Any], registry: Any) -> None:
    """Every section but ``stage``, whose grid needs the tokenizer (checked when it runs)."""
    from videopoet.core.declarations import parse_format
    from videopoet.core.tokenizer_training import validate_section
    from videopoet.core.training import TrainConfig
    from videopoet.plugins.superres import train

    config = validate_section(train.RefinerTrainingConfig, raw, "")
    validate_section(TrainConfig, config.train, "train")
    data = validate_section(train.DataConfig, config.data, "data")
    validate_section(train.ObjectiveConfig, config.objective, "objective")
    validate_section(train.EvalConfig, config.eval, "eval")
    if config.refiner != "superres":
        raise ConfigError("refiner", config.refiner, "superres (the trainer this has)")
    if config.text_encoder.name not in registry.text_encoders:
        name = config.text_encoder.name
        expected = one_of(name, registry.text_encoders, "registered text encoders")
        raise ConfigError("text_encoder.name", name, expected)
    try:
        parse_format(data.format)
    except ConfigError as exc:
        raise ConfigError("data.format", exc.value, exc.expected) from None


def _check_init(options: InitOptions, registry: Any) -> list[tuple[str, Any, str]]:
    from videopoet.core.declarations import parse_format
    from videopoet.core.model import PRESETS

    out = []
    if options.preset not in PRESETS:
        out.append(("preset", options.preset, one_of(options.preset, PRESETS, "a preset")))
    if options.text_encoder not in registry.text_encoders:
        expected = one_of(options.text_encoder, registry.text_encoders, "a registered text encoder")
        out.append(("text_encoder", options.text_encoder, expected))
    for name in ("visual_tokenizer", "audio_tokenizer"):
        path = getattr(options, name)
        if path is None and options.preset in PRESETS and options.preset != "tiny":
            out.append((name, None, f"a trained tokenizer folder for preset {options.preset}"))
        elif path is not None and not Path(path).is_dir():
            out.append((name, path, "an existing tokenizer folder"))
    for index, value in enumerate(options.formats or []):
        try:
            parse_format(value)
        except ConfigError:
            out.append((f"formats.{index}", value, "a format FRAMESxHEIGHTxWIDTH, e.g. 17x64x64"))
    if options.preset in PRESETS:
        out += _check_model(options.preset, options.model)
    return out


def _check_model(preset: str, model: dict[str, Any]) -> list[tuple[str, Any, str]]:
    from pydantic import ValidationError

    from videopoet.core.model import ModelConfig

    fixed = sorted({"vocab_size", "text_dim"} & set(model))
    if fixed:
        return [
            (
                f"model.{fixed[0]}",
                model[fixed[0]],
                "left out: the tokenizers and text encoder set it",
            )
        ]
    try:
        ModelConfig.preset(preset, vocab_size=2, **model)
    except ValidationError as exc:
        return [
            (
                "model." + ".".join(str(p) for p in e["loc"]) if e["loc"] else "model",
                e.get("input"),
                e["msg"],
            )
            for e in exc.errors()
        ]
    return []


def _check_evaluate(options: EvaluateOptions, registry: Any) -> list[tuple[str, Any, str]]:
    from videopoet.core.declarations import parse_format
    from videopoet.data.evaluation import PROBES

    out = [
        ("tasks", task, one_of(task, PROBES, "a task evaluate measures"))
        for task in options.tasks or []
        if task not in PROBES
    ]
    if options.format is not None:
        try:
            parse_format(options.format)
        except ConfigError:
            out.append(("format", options.format, "a format FRAMESxHEIGHTxWIDTH, e.g. 17x64x64"))
    return out


_BUNDLE_SETS = {
    "bundle": ("the bundle input", "(the bundle input)"),
}
_REFINER_SETS = {
    "tokenizer": ("the bundle input's visual tokenizer", None),
    "text_encoder": ("the bundle input's text encoder", None),
    "train.out_dir": ("the step's folder", "(the step's folder)"),
}

STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec(
            "init",
            "videopoet init",
            "an untrained bundle around trained tokenizers",
            (),
            ("bundle",),
            InitOptions,
            check=_check_init,
        ),
        StageSpec(
            "tokenize",
            "videopoet tokenize",
            "token shards of a dataset for the bundle (resumes by chunks)",
            (StageInput("bundle", help="the bundle whose tokenizers and text encoder are used"),),
            ("shards",),
            ConfigOptions,
            ConfigSchema(
                _check_tokenize,
                _BUNDLE_SETS | {"out": ("the step's folder", "(the step's folder)")},
            ),
            resumes=True,
        ),
        StageSpec(
            "train",
            "videopoet train",
            "the prefix LM trained on the shards; resumes from its checkpoints",
            (StageInput("bundle"), StageInput("shards")),
            ("bundle",),
            ConfigOptions,
            ConfigSchema(
                _check_train,
                _BUNDLE_SETS
                | {
                    "shards": ("the shards input", "(the shards input)"),
                    "train.out_dir": ("the step's folder", "(the step's folder)"),
                },
            ),
            resumes=True,
        ),
        StageSpec(
            "prepare-refiner",
            "videopoet train-refiner --prepare",
            "the super-resolution clips tokenized (resumes by chunks)",
            (StageInput("bundle", help="its visual tokenizer and text encoder are used"),),
            ("tokens",),
            ConfigOptions,
            ConfigSchema(_check_refiner, _REFINER_SETS),
            resumes=True,
        ),
        StageSpec(
            "train-refiner",
            "videopoet train-refiner",
            "a super-resolution stage trained; resumes from its checkpoints",
            (
                StageInput("bundle", help="its visual tokenizer and text encoder are used"),
                StageInput("tokens", optional=True, help="a prepare-refiner stage's tokens"),
            ),
            ("refiner_dir",),
            ConfigOptions,
            ConfigSchema(_check_refiner, _REFINER_SETS),
            resumes=True,
        ),
        StageSpec(
            "add-refiner",
            "videopoet add-refiner",
            "a new bundle: the bundle input with the refiner in it",
            (StageInput("bundle"), StageInput("refiner_dir", help="a train-refiner stage's")),
            ("bundle",),
            AddRefinerOptions,
        ),
        StageSpec(
            "evaluate",
            "videopoet evaluate --json",
            "the bundle measured on held-out world samples (evaluation.json)",
            (StageInput("bundle"),),
            ("evaluation",),
            EvaluateOptions,
            check=_check_evaluate,
        ),
        StageSpec(
            "model-card",
            "(none)",
            "MODEL_CARD.md in the bundle: command, parameters, wall time per stage, machine, "
            "figures",
            (StageInput("bundle"), StageInput("evaluation", optional=True)),
            ("bundle", "card"),
            CardOptions,
        ),
    )
}

#: every output a stage makes (what an input of a stage may name); none is a key of a step, as
#: ``${steps.NAME.KEY}`` with a step's key is an interpolation, not a reference
STAGE_OUTPUTS = tuple(dict.fromkeys(o for spec in STAGES.values() for o in spec.outputs))


def shipped_configs() -> list[str]:
    """The configs under the project's ``configs/`` by name (``lm/tiny``)."""
    if not CONFIGS.is_dir():
        return []
    found = CONFIGS.rglob("*.yaml")
    return sorted(p.relative_to(CONFIGS).with_suffix("").as_posix() for p in found)
