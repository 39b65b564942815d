"""The shared training loop: seeded, resumable, with progress, periodic eval and checkpoints.

Every trainer of the project (visual tokenizer, audio tokenizer, prefix LM, super-resolution)
runs through :func:`train`; a trainer supplies only what is specific to it.

API (small on purpose)::

    from videopoet.core.training import TrainConfig, train

    config = TrainConfig(steps=2000, lr=3e-4, out_dir="runs/tok", eval_every=200)
    result = train(model, loss_fn, batches, config, eval_fn=None, model_config=None)

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

On disk (``out_dir``)::

    checkpoints/step_00000100/model.safetensors      weights (safetensors)
    checkpoints/step_00000100/optimizer.safetensors  optimizer tensors + RNG states
    checkpoints/step_00000100/train_state.json       step, optimizer scalars, last metrics
    checkpoints/step_00000100/config.json            only with ``model_config``
    metrics.jsonl                                    one JSON line per log / eval

A checkpoint is written into a hidden temporary directory and renamed into place, so a
directory named ``step_*`` is always complete; only the last ``keep_checkpoints`` are kept.
With ``resume=True`` (the default) a run continues from the newest checkpoint in ``out_dir``:
model, optimizer, learning-rate schedule position and RNG states.

:func:`latest_checkpoint` and :func:`load_checkpoint_weights` are public for trainers that
want the newest weights after a run.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from videopoet.core.errors import ConfigError
from videopoet.core.serialization import (
    load_json,
    load_tensors,
    save_json,
    save_pretrained,
    save_tensors,
)

LossFn = Callable[[torch.nn.Module, Any], Mapping[str, torch.Tensor]]
EvalFn = Callable[[torch.nn.Module], Mapping[str, float]]

CHECKPOINT_DIR = "checkpoints"
STATE_NAME = "train_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"
MODEL_NAME = "model.safetensors"


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


# ---------------------------------------------------------------------------- checkpoints


def _checkpoint_root(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / CHECKPOINT_DIR


def list_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint directories of a run, oldest first."""
    root = _checkpoint_root(out_dir)
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith("step_") and (p / STATE_NAME).is_file()
    ]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def load_checkpoint_weights(
    checkpoint: str | os.PathLike, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    return load_tensors(Path(checkpoint) / MODEL_NAME, device)


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
    final = root / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}.", suffix=".tmp"))
    try:
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
        if final.exists():  # a re-run of the same step replaces it
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _restore(
    checkpoint: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> int:
    model.load_state_dict(load_checkpoint_weights(checkpoint, device))
    state = load_json(checkpoint / STATE_NAME)
    tensors = load_tensors(checkpoint / OPTIMIZER_NAME, "cpu")
    optimizer.load_state_dict(_optimizer_from_flat(tensors, state["optimizer"]))
    if "rng.cpu" in tensors:
        torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return int(state["step"])


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
    with open(out_dir / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")


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
) -> dict[str, Any]:
    """Train ``model`` for ``config.steps`` optimizer steps; see the module docstring.

    Returns ``{"step", "metrics" (last logged training values), "eval" (last eval values),
    "checkpoint" (path of the last checkpoint), "resumed_from" (step or None), "seconds"}``.
    """
    device = resolve_device(config.device)
    out_dir = Path(config.out_dir)
    seed_everything(config.seed)
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    model.to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("model", type(model).__name__, "a module with trainable parameters")
    optimizer = torch.optim.AdamW(
        params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
    start, resumed_from = 0, None
    previous = latest_checkpoint(out_dir) if config.resume else None
    if previous is not None:
        start = resumed_from = _restore(previous, model, optimizer, device)
    autocast = config.dtype == "bfloat16"
    draw = batches if callable(batches) else None
    iterator = None if draw is not None else iter(batches)  # type: ignore[arg-type]

    from tqdm.auto import tqdm

    bar = tqdm(
        total=config.steps,
        initial=start,
        desc=f"train {out_dir.name}",
        disable=not config.progress,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    began = time.monotonic()
    logged: dict[str, float] = {}
    evaluated: dict[str, float] = {}
    checkpoint: Path | None = previous
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
