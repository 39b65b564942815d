"""The shared training loop: seeded, resumable, with progress, periodic eval and checkpoints.

Every trainer of the project (visual tokenizer, audio tokenizer, prefix LM, super-resolution)
runs through :func:`train`; a trainer supplies only what is specific to it.

API (small on purpose)::

    from videopoet.core.training import TrainConfig, train

    config = TrainConfig(steps=2000, lr=3e-4, out_dir="runs/tok", eval_every=200)
    result = train(model, loss_fn, batches, config, eval_fn=None, model_config=None,
                   run_config=None)

- ``loss_fn(model, batch) -> dict[str, Tensor]``: must hold ``"loss"`` (the scalar that is
  back-propagated); every other entry is logged (its ``.item()``) in the progress bar and in
  ``metrics.jsonl``. A trainer with an adversary keeps one optimizer: it computes the
  generator's adversarial term through detached discriminator weights, so one ``loss`` trains
  both (see :mod:`videopoet.plugins.magvit.losses`).
- ``batches``: either a callable ``batches(step) -> batch`` (preferred: a resumed run sees the
  same batches as an uninterrupted one) or an iterable that is drawn from once per step. A batch
  is anything ``loss_fn`` accepts; tensors in it (also inside dicts, lists and tuples) are moved
  to ``config.device`` for you.
- ``eval_fn(model) -> dict[str, float]``: called under ``torch.no_grad()`` with the model in
  eval mode, every ``eval_every`` steps and after the last step.
- ``model_config``: if given, every checkpoint directory is also a
  :func:`videopoet.core.serialization.load_pretrained` directory (``config.json`` beside
  ``model.safetensors``), so any checkpoint can be loaded as a model.
- ``run_config``: the other sections of the run's config (e.g. a tokenizer's ``network`` and
  ``data``), recorded in ``train_config.json`` beside ``train`` and checked on resume.

On disk (``out_dir``)::

    checkpoints/step_00000100/model.safetensors      weights (safetensors)
    checkpoints/step_00000100/optimizer.safetensors  optimizer tensors + RNG states
    checkpoints/step_00000100/train_state.json       step, optimizer scalars, last metrics
    checkpoints/step_00000100/config.json            only with ``model_config``
    metrics.jsonl                                    one JSON line per log / eval
    train_config.json                                the run's config, checked on resume

Files and folders get the permissions of the umask (0644 / 0755 under 022). ``out_dir`` is
created first (:func:`ensure_out_dir`); one that cannot be created or written (under a regular
file, no permission) is a :class:`ConfigError` naming ``train.out_dir`` before any step.

Seeding: :func:`prepare_run` seeds torch, ``random`` and numpy from ``seed``; call it before
building the model (``train`` calls it again) and a fresh run is a function of its config.

Checkpoints: each is written into a hidden ``.step_*.tmp`` directory and renamed into place, so a
directory named ``step_*`` is complete; temporary directories left by a killed write are removed
at the next start or save. Only the last ``keep_checkpoints`` are kept.

Resuming (``resume=True``, the default) continues from the newest intact checkpoint: model,
optimizer, learning-rate schedule position and RNG states. A damaged checkpoint (unreadable
files, a broken ``train_state.json``) is reported by path on stderr and through :mod:`logging`,
and the next older one is used (or, if none is intact, training starts from step 0).
``metrics.jsonl`` is cut back to the records up to the step the run starts from (a run that
starts at step 0 starts it afresh), so every step appears once.

The run's config is ``train_config.json``: the ``train`` section (every :class:`TrainConfig`
field) plus the ``run_config`` sections a trainer passes (a tokenizer's ``network``, ``data``,
``loss``). Resuming with a different value is a :class:`ConfigError` naming the dotted fields,
unless ``allow_config_change`` (then the change is logged, also in ``metrics.jsonl``, and
recorded). Fields of :data:`FREE_FIELDS` (``steps``, ``device``, intervals ...) may always
change: extending a run is normal. Checkpoint weights that do not fit the model are a
:class:`ConfigError` naming the checkpoint and the first mismatching parameter.

A run whose newest checkpoint is already at ``steps`` trains nothing: it says so on stderr and
returns the metrics and eval figures stored in that checkpoint.

:func:`latest_checkpoint` and :func:`load_checkpoint_weights` are public for trainers that
want the newest weights after a run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from videopoet.core.errors import ConfigError
from videopoet.core.serialization import (
    atomic_write,
    load_json,
    load_tensors,
    save_json,
    save_pretrained,
    save_tensors,
    umask_mode,
)

LossFn = Callable[[torch.nn.Module, Any], Mapping[str, torch.Tensor]]
EvalFn = Callable[[torch.nn.Module], Mapping[str, float]]

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
STATE_NAME = "train_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"
MODEL_NAME = "model.safetensors"
METRICS_NAME = "metrics.jsonl"
RUN_CONFIG_NAME = "train_config.json"
#: TrainConfig fields a resumed run may change: how long and how it is run and watched, not
#: what it learns.
FREE_FIELDS = frozenset(
    {
        "steps",
        "time_limit_s",
        "progress",
        "num_threads",
        "device",
        "eval_every",
        "log_every",
        "checkpoint_every",
        "keep_checkpoints",
        "resume",
        "out_dir",
        "allow_config_change",
    }
)


class TrainConfig(BaseModel):
    """How to train: the ``train:`` section of every training YAML."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(1000, ge=1, description="optimizer steps in total (a resumed run included)")
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = Field(0, ge=0, description="linear warm-up from 0 to lr")
    schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine floor as a fraction of lr")
    batch_size: int = Field(8, ge=1)
    grad_clip: float | None = Field(1.0, gt=0, description="max global grad norm; null: off")
    eval_every: int = Field(0, ge=0, description="0: evaluate only after the last step")
    checkpoint_every: int = Field(500, ge=0, description="0: checkpoint only at the end")
    keep_checkpoints: int = Field(3, ge=1)
    log_every: int = Field(10, ge=1)
    out_dir: str = "runs/train"
    seed: int = 0
    device: str = Field("auto", description="cpu, cuda, cuda:N or auto")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="autocast dtype")
    resume: bool = True
    allow_config_change: bool = Field(
        False, description="resume although the recorded config differs (the change is logged)"
    )
    time_limit_s: float | None = Field(
        None, gt=0, description="stop (with a checkpoint) after this many seconds"
    )
    progress: bool = True
    num_threads: int | None = Field(
        None, ge=1, description="torch CPU threads; 1 avoids thrashing on a shared machine"
    )


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; a CUDA device that is absent is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError("device", name, "cpu, cuda, cuda:N or auto") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", name, "a device that exists here (no CUDA is available)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError("device", name, f"one of {torch.cuda.device_count()} CUDA devices")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # numpy is optional for the loop itself
        pass


def prepare_run(config: TrainConfig) -> None:
    """Seed torch, ``random`` and numpy from ``config.seed`` and set torch's CPU threads.

    Call it before building the model: its initial weights then come from ``train.seed`` and
    not from whatever ran before, so the same command gives the same run.
    """
    seed_everything(config.seed)
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor inside ``batch`` (dicts, lists, tuples) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based)."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def _warn(message: str) -> None:
    """A warning through :mod:`logging` that is also seen on stderr exactly once."""
    log.warning(message)
    if log.hasHandlers():  # without any handler, logging's last resort prints it on stderr
        from tqdm.auto import tqdm

        tqdm.write(message, file=sys.stderr)


# ---------------------------------------------------------------------------- run config


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _run_record(config: TrainConfig, run_config: Mapping[str, Any] | None) -> dict[str, Any]:
    record = {**(run_config or {}), "train": config.model_dump(mode="json")}
    return json.loads(json.dumps(record))  # as it reads back from disk (tuples are lists)


def check_resume_config(
    config: TrainConfig, run_config: Mapping[str, Any] | None = None
) -> dict[str, tuple[Any, Any]]:
    """What resuming ``config.out_dir`` would change: ``{dotted field: (recorded, now)}``.

    Empty for a fresh run (no checkpoint, or ``resume=False``) or a run recorded before
    ``train_config.json`` existed. A change outside :data:`FREE_FIELDS` is a ConfigError unless
    ``config.allow_config_change``.
    """
    path = Path(config.out_dir) / RUN_CONFIG_NAME
    if not config.resume or not list_checkpoints(config.out_dir) or not path.is_file():
        return {}
    try:
        recorded = load_json(path)
        if not isinstance(recorded, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        _warn(f"cannot compare with the recorded config {path} ({exc}); it is rewritten")
        return {}
    try:  # a record written by an older version may lack fields that have a default now
        recorded["train"] = TrainConfig.model_validate(recorded.get("train", {})).model_dump(
            mode="json"
        )
    except ValidationError:
        pass
    unset = "(unset)"
    old, new = _flatten(recorded), _flatten(_run_record(config, run_config))
    changes = {
        key: (old.get(key, unset), new.get(key, unset))
        for key in sorted(old.keys() | new.keys())
        if old.get(key, unset) != new.get(key, unset)
        and not (key.startswith("train.") and key.split(".")[1] in FREE_FIELDS)
    }
    if changes and not config.allow_config_change:
        shown = "; ".join(f"{k} was {o!r}, now {n!r}" for k, (o, n) in changes.items())
        now = {k: n for k, (_, n) in changes.items()}
        raise ConfigError(
            ", ".join(changes),
            now.popitem()[1] if len(now) == 1 else now,
            f"the config this run was started with ({shown}; recorded in {path}): to train"
            " something else use a new train.out_dir, or pass train.allow_config_change=true",
        )
    return changes


# ---------------------------------------------------------------------------- checkpoints


def ensure_out_dir(out_dir: str | os.PathLike) -> Path:
    """Create ``out_dir`` (and its parents) and check that a file can be written in it.

    A path that cannot serve (a regular file, a path under one, no permission, a read-only
    file system) is a :class:`ConfigError` naming ``train.out_dir``, before anything is built
    or trained.
    """
    path = Path(out_dir)
    expected = "a directory that can be created and written"
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        what = "it is" if blocker == path else f"{blocker} is"
        raise ConfigError("train.out_dir", str(path), f"{expected} ({what} a file)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write_test.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        reason = exc.strerror or type(exc).__name__
        raise ConfigError("train.out_dir", str(path), f"{expected} ({reason}{where})") from None
    return path


def _checkpoint_root(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / CHECKPOINT_DIR


def _step_dirs(out_dir: str | os.PathLike) -> list[Path]:
    """Every ``step_N`` directory, complete or not, oldest first."""
    root = _checkpoint_root(out_dir)
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name[5:]))


def list_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint directories of a run, oldest first."""
    return [p for p in _step_dirs(out_dir) if (p / STATE_NAME).is_file()]


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def load_checkpoint_weights(
    checkpoint: str | os.PathLike, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    return load_tensors(Path(checkpoint) / MODEL_NAME, device)


def _remove_stale_temporaries(root: Path) -> None:
    """Temporary checkpoint directories of a killed write: nothing will ever complete them."""
    for stale in root.glob(".step_*.tmp") if root.is_dir() else ():
        shutil.rmtree(stale, ignore_errors=True)


def _optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into named tensors and a JSON remainder."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, slots in state["state"].items():
        for key, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith("state."):
            continue
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for index, slots in meta["scalars"].items():
        state.setdefault(int(index), {}).update(slots)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    out_dir: str | os.PathLike,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    metrics: Mapping[str, float],
    model_config: dict[str, Any] | None = None,
    keep: int = 3,
) -> Path:
    """Write ``checkpoints/step_XXXXXXXX`` atomically (temp dir + rename) and prune old ones."""
    root = _checkpoint_root(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root)
    final = root / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, umask_mode(directory=True))  # mkdtemp makes it 0700 whatever the umask
        if model_config is not None:
            save_pretrained(tmp, model, model_config)
        else:
            save_tensors(tmp / MODEL_NAME, model.state_dict())
        tensors, meta = _optimizer_to_flat(optimizer)
        tensors["rng.cpu"] = torch.get_rng_state()
        if torch.cuda.is_available():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        save_tensors(tmp / OPTIMIZER_NAME, tensors)
        save_json(
            tmp / STATE_NAME,
            {"step": step, "optimizer": meta, "metrics": dict(metrics), "time": time.time()},
        )
        if final.exists():  # a re-run of the same step (or a damaged one) is replaced
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


@dataclass
class _Checkpoint:
    path: Path
    step: int
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, torch.Tensor]
    metrics: dict[str, float]


def _read_checkpoint(path: Path, device: torch.device) -> _Checkpoint:
    """Everything a resume needs, read (and so checked) before anything is applied."""
    state = load_json(path / STATE_NAME)
    tensors = load_tensors(path / OPTIMIZER_NAME, "cpu")
    return _Checkpoint(
        path=path,
        step=int(state["step"]),
        weights=load_checkpoint_weights(path, device),
        optimizer=_optimizer_from_flat(tensors, state["optimizer"]),
        rng={k: v for k, v in tensors.items() if k.startswith("rng.")},
        metrics=dict(state.get("metrics", {})),
    )


def _newest_intact(out_dir: Path, device: torch.device) -> _Checkpoint | None:
    """The newest checkpoint that reads back whole; damaged ones are reported by path."""
    damaged = False
    for path in reversed(_step_dirs(out_dir)):
        try:
            found = _read_checkpoint(path, device)
        except Exception as exc:  # whatever is broken in it, this one cannot be resumed from
            _warn(f"checkpoint {path} is damaged and skipped ({type(exc).__name__}: {exc})")
            damaged = True
            continue
        if damaged:
            _warn(f"resuming from the older checkpoint {path}")
        return found
    if damaged:
        _warn(f"no intact checkpoint in {_checkpoint_root(out_dir)}: training starts at step 0")
    return None


def _restore(
    checkpoint: _Checkpoint, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> None:
    """Apply a checkpoint; weights of other shapes are a ConfigError, not torch's long report."""
    where = str(checkpoint.path)
    hint = "use a new train.out_dir (or train.resume=false to start over)"
    expected = model.state_dict()
    for name, tensor in expected.items():
        saved = checkpoint.weights.get(name)
        if saved is not None and saved.shape != tensor.shape:
            raise ConfigError(
                "checkpoint",
                where,
                f"weights that fit the model, but {name} is {tuple(saved.shape)} there and "
                f"{tuple(tensor.shape)} in the model (the network changed): {hint}",
            )
    missing = sorted(expected.keys() - checkpoint.weights.keys())
    extra = sorted(checkpoint.weights.keys() - expected.keys())
    if missing or extra:
        raise ConfigError(
            "checkpoint",
            where,
            f"the model's parameter names (missing there: {missing[:3]}, not in the model: "
            f"{extra[:3]}): {hint}",
        )
    model.load_state_dict(checkpoint.weights)
    try:
        optimizer.load_state_dict(checkpoint.optimizer)
    except ValueError as exc:  # e.g. another set of trainable parameters
        raise ConfigError("checkpoint", where, f"optimizer state for this model ({exc})") from exc
    if "rng.cpu" in checkpoint.rng:
        torch.set_rng_state(checkpoint.rng["rng.cpu"])
    if "rng.cuda" in checkpoint.rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(checkpoint.rng["rng.cuda"])


# ---------------------------------------------------------------------------- the loop


def _scalars(values: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in values.items():
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                continue
            value = value.detach().float().item()
        if isinstance(value, int | float):
            out[key] = float(value)
    return out


def _append_metrics(out_dir: Path, record: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / METRICS_NAME, "a") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")


def _cut_metrics(out_dir: Path, step: int) -> None:
    """Keep the records up to ``step``: the run (re)starts there and logs the later ones again."""
    path = out_dir / METRICS_NAME
    if not path.is_file():
        return
    kept, cut = [], False
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line torn by a kill
            cut = True
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line + "\n")
        else:
            cut = True
    if cut:
        atomic_write(path, "".join(kept))


def _evaluate(model: torch.nn.Module, eval_fn: EvalFn) -> dict[str, float]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _scalars(eval_fn(model))
    finally:
        model.train(was_training)


def train(
    model: torch.nn.Module,
    loss_fn: LossFn,
    batches: Callable[[int], Any] | Iterable[Any],
    config: TrainConfig,
    eval_fn: EvalFn | None = None,
    model_config: dict[str, Any] | None = None,
    run_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``model`` for ``config.steps`` optimizer steps; see the module docstring.

    Returns ``{"step", "metrics" (last logged training values), "eval" (last eval values),
    "checkpoint" (path of the last checkpoint), "resumed_from" (step or None), "seconds"}``.
    """
    out_dir = ensure_out_dir(config.out_dir)
    device = resolve_device(config.device)
    prepare_run(config)
    model.to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("model", type(model).__name__, "a module with trainable parameters")
    optimizer = torch.optim.AdamW(
        params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
    _remove_stale_temporaries(_checkpoint_root(out_dir))
    start, resumed_from, changes = 0, None, {}
    logged: dict[str, float] = {}
    evaluated: dict[str, float] = {}
    previous = _newest_intact(out_dir, device) if config.resume else None
    if previous is not None:
        changes = check_resume_config(config, run_config)  # before weights of another shape
        _restore(previous, model, optimizer)
        start = resumed_from = previous.step
        for key, value in previous.metrics.items():
            if key.startswith("eval/"):
                evaluated[key.removeprefix("eval/")] = value
            else:
                logged[key] = value
    out_dir.mkdir(parents=True, exist_ok=True)
    _cut_metrics(out_dir, start)
    save_json(out_dir / RUN_CONFIG_NAME, _run_record(config, run_config))
    if changes:
        shown = "; ".join(f"{k}: {o!r} -> {n!r}" for k, (o, n) in changes.items())
        _warn(f"resuming {out_dir} at step {start} with a changed config: {shown}")
        _append_metrics(
            out_dir, {"step": start, "config_change": {k: list(v) for k, v in changes.items()}}
        )
    autocast = config.dtype == "bfloat16"
    draw = batches if callable(batches) else None
    iterator = None if draw is not None else iter(batches)  # type: ignore[arg-type]

    from tqdm.auto import tqdm

    if previous is not None and start >= config.steps:
        tqdm.write(
            f"the run in {out_dir} is already complete at step {start} ({previous.path}); "
            "raise train.steps to train further",
            file=sys.stderr,
        )
    bar = tqdm(
        total=config.steps,
        initial=start,
        desc=f"train {out_dir.name}",
        disable=not config.progress or start >= config.steps,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    began = time.monotonic()
    checkpoint: Path | None = previous.path if previous is not None else None
    step = start
    try:
        while step < config.steps:
            batch = draw(step) if draw is not None else next(iterator)  # type: ignore[arg-type]
            batch = to_device(batch, device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, config)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                losses = loss_fn(model, batch)
            if "loss" not in losses:
                raise ConfigError("loss_fn", sorted(losses), "a dict holding the key 'loss'")
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            step += 1
            bar.update(1)
            if step % config.log_every == 0 or step == config.steps:
                logged = _scalars(losses)
                bar.set_postfix({k: f"{v:.4g}" for k, v in list(logged.items())[:4]})
                _append_metrics(
                    out_dir, {"step": step, "lr": optimizer.param_groups[0]["lr"], **logged}
                )
            out_of_time = (
                config.time_limit_s is not None and time.monotonic() - began > config.time_limit_s
            )
            last = step == config.steps or out_of_time
            if eval_fn is not None and (
                last or (config.eval_every and step % config.eval_every == 0)
            ):
                evaluated = _evaluate(model, eval_fn)
                shown = ", ".join(f"{k}={v:.4g}" for k, v in evaluated.items())
                bar.write(f"step {step}: {shown}", file=sys.stderr)
                _append_metrics(out_dir, {"step": step, "eval": evaluated})
            if last or (config.checkpoint_every and step % config.checkpoint_every == 0):
                checkpoint = save_checkpoint(
                    out_dir,
                    step,
                    model,
                    optimizer,
                    {**logged, **{f"eval/{k}": v for k, v in evaluated.items()}},
                    model_config,
                    config.keep_checkpoints,
                )
            if out_of_time:
                bar.write(
                    f"time limit of {config.time_limit_s:g} s reached at step {step}",
                    file=sys.stderr,
                )
                break
    finally:
        bar.close()
    return {
        "step": step,
        "metrics": logged,
        "eval": evaluated,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "resumed_from": resumed_from,
        "seconds": time.monotonic() - began,
    }
