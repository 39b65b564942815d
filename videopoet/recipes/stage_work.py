"""What each pipeline stage does: the function behind its command, called in-process.

Each takes a :class:`StageContext` (its folder in the run folder, its inputs as paths, its
validated options, its merged config) and returns a :class:`StageOutcome` (its outputs and
the command's result). A stage writes only inside its own folder, except ``model-card``, which
writes MODEL_CARD.md into the bundle it is given. Training stages resume from the checkpoints
in their folder; when the recorded training config differs in a field that cannot change on
resume (``videopoet.core.training.FREE_FIELDS`` can), the training starts over, because the
recipe, not the folder's history, says what the result is.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videopoet.core.errors import ConfigError
from videopoet.recipes.stage_plan import merge


@dataclass
class RunInfo:
    """What the run knows about itself (for the model card)."""

    recipe: str
    source: str
    command: str
    parameters: dict[str, Any]
    out: Path
    #: the records (``stage.json``) of the steps before this one, in order
    records: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class StageContext:
    step: str
    folder: Path
    inputs: dict[str, Path]
    options: dict[str, Any]
    config: dict[str, Any] | None
    progress: bool
    run: RunInfo


@dataclass
class StageOutcome:
    outputs: dict[str, Path]
    result: dict[str, Any] = field(default_factory=dict)
    #: why the stage ended before its work was done (a time limit); None when done
    stopped: str | None = None
    #: whether it threw away what an earlier attempt had done (a training config changed)
    restarted: bool = False


def note(message: str) -> None:
    """A line on stderr that does not break the progress bars."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


def tokenizer_dirs(options: dict[str, Any]) -> dict[str, Path]:
    """The tokenizer folders ``init`` builds from (the committed ones for preset tiny)."""
    from videopoet.cli_generate import TINY_AUDIO, TINY_VISUAL

    tiny = options.get("preset") == "tiny"
    out = {}
    for name, default in (("visual_tokenizer", TINY_VISUAL), ("audio_tokenizer", TINY_AUDIO)):
        value = options.get(name) or (default if tiny else None)
        if value is not None:
            out[name] = Path(value)
    return out


def key_paths(stage: str, options: dict[str, Any]) -> dict[str, Path]:
    """Files a stage reads besides its inputs, whose content belongs in its key."""
    return tokenizer_dirs(options) if stage == "init" else {}


# ---------------------------------------------------------------------------- stages


def _init(ctx: StageContext) -> StageOutcome:
    from videopoet.core.engine import Engine

    o = ctx.options
    dirs = tokenizer_dirs(o)
    engine = Engine.create(
        preset=o["preset"],
        visual_dir=dirs.get("visual_tokenizer"),
        audio_dir=dirs.get("audio_tokenizer"),
        text_encoder=o["text_encoder"],
        text_options=o["text_options"],
        formats=o["formats"],
        seed=o["seed"],
        **o.get("model", {}),
    )
    path = engine.save_pretrained(ctx.folder / "bundle", description=f"untrained {o['preset']}")
    result = {
        "parameters": engine.lm.num_parameters(),
        "vocab_size": engine.vocab.size,
        "formats": [str(f) for f in engine.formats],
    }
    return StageOutcome({"bundle": path}, result)


def _tokenize(ctx: StageContext) -> StageOutcome:
    from videopoet.core.lm_training import TokenizeConfig, tokenize
    from videopoet.core.tokenizer_training import validate_section

    assert ctx.config is not None
    paths = {"bundle": str(ctx.inputs["bundle"]), "out": str(ctx.folder / "shards")}
    raw = merge(ctx.config, paths)
    config = validate_section(TokenizeConfig, raw, "")
    # chunks an earlier attempt committed are kept; made with another config, thrown away
    result = tokenize(config, progress=ctx.progress, restart_changed=True)
    if result["restarted"]:
        note(f"{ctx.step}: the tokenize config changed; tokenizing starts over")
    outputs = {"shards": Path(result["shards"])}
    return StageOutcome(outputs, result, restarted=result["restarted"])


def _train(ctx: StageContext) -> StageOutcome:
    from videopoet.core.lm_training import LMTrainingConfig, train_lm
    from videopoet.core.tokenizer_training import validate_section

    assert ctx.config is not None
    run = ctx.folder / "run"
    paths = {"bundle": str(ctx.inputs["bundle"]), "shards": str(ctx.inputs["shards"])}
    raw = merge(ctx.config, paths | {"train": {"out_dir": str(run)}})
    raw["train"].setdefault("progress", ctx.progress)
    config = validate_section(LMTrainingConfig, raw, "")
    run_config = config.model_dump(mode="json", exclude={"train"})
    restarted = _start_over_if_changed(ctx, config.train, run_config)
    result = train_lm(raw)
    stopped = _stopped(result, config.train)
    return StageOutcome({"bundle": Path(result["bundle"])}, result, stopped, restarted)


def _refiner_config(ctx: StageContext) -> dict[str, Any]:
    """The config with the bundle input's visual tokenizer and text encoder, so the stage
    models the bundle's tokens and reads the same text embeddings the bundle makes."""
    from videopoet.core.bundle import VISUAL_DIR, read_bundle_config

    assert ctx.config is not None
    bundle = ctx.inputs["bundle"]
    record = read_bundle_config(bundle).text_encoder
    if record is None or not (bundle / VISUAL_DIR).is_dir():
        raise ConfigError("inputs.bundle", str(bundle), "a bundle with a visual tokenizer")
    raw = merge(ctx.config, {"train": {"out_dir": str(ctx.folder / "run")}})
    raw["tokenizer"] = str(bundle / VISUAL_DIR)
    raw["text_encoder"] = {"name": record.name, "options": dict(record.options)}
    raw["train"].setdefault("progress", ctx.progress)
    return raw


def _prepare_refiner(ctx: StageContext) -> StageOutcome:
    from videopoet.plugins.superres.train import train_refiner

    result = train_refiner(_refiner_config(ctx), prepare_only=True)
    return StageOutcome({"tokens": Path(result["tokens"])}, result)


def _train_refiner(ctx: StageContext) -> StageOutcome:
    from videopoet.plugins.superres.train import TOKENS_DIR, Plan, train_refiner

    raw = _refiner_config(ctx)
    plan = Plan(raw)
    restarted = _start_over_if_changed(ctx, plan.train, plan.run_config())
    tokens = ctx.inputs.get("tokens")
    if tokens is not None and not (ctx.folder / "run" / TOKENS_DIR).exists():
        _link_files(tokens, ctx.folder / "run" / TOKENS_DIR)
    result = train_refiner(raw)
    outputs = {"refiner_dir": Path(result["refiner_dir"])}
    return StageOutcome(outputs, result, _stopped(result, plan.train), restarted)


def _add_refiner(ctx: StageContext) -> StageOutcome:
    """What ``videopoet add-refiner BUNDLE DIR --out OUT`` does, into the stage's folder."""
    from videopoet.plugins.superres.refiner import add_to_bundle

    description = ctx.options["description"] or f"trained by the recipe {ctx.run.recipe}"
    stages = [ctx.inputs["refiner_dir"]]
    result = add_to_bundle(ctx.inputs["bundle"], stages, ctx.folder / "bundle", description)
    return StageOutcome({"bundle": Path(result.pop("bundle"))}, result)


def _evaluate(ctx: StageContext) -> StageOutcome:
    """What ``videopoet evaluate BUNDLE --json`` prints, saved as ``evaluation.json``."""
    import json

    import torch

    from videopoet.core.engine import Engine
    from videopoet.core.generation_config import SAMPLING_KEYS
    from videopoet.core.serialization import save_json
    from videopoet.data.evaluation import evaluate, task_sampling, untrained_engine

    o, bundle = ctx.options, ctx.inputs["bundle"]
    threads = torch.get_num_threads()
    if o["threads"] is not None:
        torch.set_num_threads(o["threads"])
    try:
        engine = Engine.from_pretrained(bundle)
        result = evaluate(
            engine,
            seeds=o["seeds"],
            tasks=o["tasks"],
            format=o["format"],
            temperature=o["temperature"],
            top_k=o["top_k"],
            top_p=o["top_p"],
            cfg_scale=o["cfg_scale"],
            untrained=o["untrained"],
            init_seed=o["init_seed"],
            progress=ctx.progress,
        )
        payload = result.to_json(str(bundle))
        if o["fvd"]:
            from videopoet.data.frechet import extractor_from_argument, frechet_figures

            fvd = frechet_figures(
                engine,
                extractor_from_argument("analyser"),
                clips=o["fvd_clips"],
                untrained=untrained_engine(engine, o["init_seed"]) if o["untrained"] else None,
                format=o["format"],
                sampling=task_sampling(engine, "t2v", {k: o[k] for k in SAMPLING_KEYS}),
                progress=ctx.progress,
            )
            payload["t2v_fvd"] = fvd.pop("bundle")
            if payload.get("untrained") is not None:
                payload["untrained"]["t2v_fvd"] = fvd.pop("untrained")
            payload["fvd"] = fvd
    finally:
        torch.set_num_threads(threads)  # the stages after this one keep their own setting
    path = ctx.folder / "evaluation.json"
    save_json(path, json.loads(json.dumps(payload, default=str)))
    return StageOutcome({"evaluation": path}, {"seeds": o["seeds"], "format": payload["format"]})


def _model_card(ctx: StageContext) -> StageOutcome:
    from videopoet.core.serialization import atomic_write, load_json
    from videopoet.recipes.model_card import CARD_NAME, render_card

    bundle = ctx.inputs["bundle"]
    evaluation = ctx.inputs.get("evaluation")
    figures = load_json(evaluation) if evaluation is not None else None
    text = render_card(bundle, figures, ctx.run, ctx.options["title"])
    atomic_write(bundle / CARD_NAME, text)
    return StageOutcome({"bundle": bundle, "card": bundle / CARD_NAME}, {"chars": len(text)})


WORK: dict[str, Callable[[StageContext], StageOutcome]] = {
    "init": _init,
    "tokenize": _tokenize,
    "train": _train,
    "prepare-refiner": _prepare_refiner,
    "train-refiner": _train_refiner,
    "add-refiner": _add_refiner,
    "evaluate": _evaluate,
    "model-card": _model_card,
}


# ---------------------------------------------------------------------------- helpers


def _start_over_if_changed(ctx: StageContext, train: Any, run_config: dict[str, Any]) -> bool:
    """Empty the stage's training folder when its checkpoints were made with a config that
    this one may not resume (the trainer would refuse it); whether it did."""
    from videopoet.core.training import check_resume_config

    try:
        check_resume_config(train, run_config)
    except ConfigError as exc:
        note(f"{ctx.step}: the training config changed ({exc.field}); training starts over")
        shutil.rmtree(ctx.folder / "run")
        return True
    return False


def _stopped(result: dict[str, Any], train: Any) -> str | None:
    step, steps = int(result["step"]), train.steps
    if step >= steps:
        return None
    why = "train.stop_at" if train.stop_at is not None and step >= train.stop_at else "time limit"
    return f"stopped at step {step} of {steps} ({why})"


def _link_files(source: Path, target: Path) -> None:
    """``source``'s files in ``target``, hard-linked where the file system allows: no second
    copy on disk, and safe because the token cache replaces files (atomically), never edits
    them in place. A chunk left out by an interruption is simply tokenized again."""
    target.mkdir(parents=True, exist_ok=True)
    for file in sorted(source.iterdir()):
        if not file.is_file() or file.name.startswith("."):  # temporaries of a write
            continue
        try:
            os.link(file, target / file.name)
        except OSError:
            shutil.copy2(file, target / file.name)
