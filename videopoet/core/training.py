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
  same batches as an uninterrupted one) or an iterable that is drawn from once per micro-batch.
  A batch is anything ``loss_fn`` accepts; tensors in it (also inside dicts, lists and tuples)
  are moved to ``config.device`` for you.
- **Gradient accumulation** (``grad_accum: K``, default 1): each optimizer step draws K
  micro-batches, ``batches(step, micro)`` for ``micro`` in ``0 … K-1`` (a callable that takes
  no ``micro`` is a ConfigError naming ``train.grad_accum``), back-propagates each loss divided
  by K and steps once: when every micro-batch's loss is a mean over rows of equal weight, the
  step is the one of a K-times larger batch, in a K-th of the memory. ``step`` stays the
  optimizer step (schedules, checkpoints, ``steps``); logged values are means over the
  micro-batches that hold them (``loss/<task>`` over that task's micro-batches). Under DDP the
  gradients are all-reduced once per step (``no_sync`` for the others), under FSDP2 likewise
  (``set_requires_gradient_sync``).
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
recorded). Fields of :data:`FREE_FIELDS` (``steps``, ``device``, intervals ...) and the
sections of :data:`FREE_SECTIONS` (the LM's ``generation`` defaults) may always change:
extending a run is normal. Checkpoint weights that do not fit the model are a
:class:`ConfigError` naming the checkpoint and the first mismatching parameter.

A run whose newest checkpoint is already at ``steps`` trains nothing: it says so on stderr and
returns the metrics and eval figures stored in that checkpoint.

:func:`latest_checkpoint` and :func:`load_checkpoint_weights` are public for trainers that
want the newest weights after a run.

Scaling out: the same call under ``torchrun --nproc_per_node N`` (``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` in the environment, or a process group already initialised) trains on N
processes (:func:`init_distributed`): the process group is initialised (``nccl`` for CUDA, where
each process takes ``cuda:LOCAL_RANK``; ``gloo`` on CPU) and ``loss_fn`` runs inside
``DistributedDataParallel``, or FSDP2 (``fully_shard``: each module of an ``nn.ModuleList``, then
the whole) with ``train.fsdp: true``, for a model whose weights, gradients and optimizer state
do not fit one device. ``loss_fn`` still receives the plain module.

- **The global batch is split** (:func:`shard_batch`): ``batches(step)`` is the global batch
  (``train.batch_size`` rows) on every rank, and rank ``r`` of ``N`` keeps rows
  ``[r·B/N, (r+1)·B/N)`` of every tensor of one or more dimensions in it (looked for inside
  dicts, lists and tuples; they must share the first dimension ``B``, a multiple of ``N``);
  numbers, strings and 0-dim tensors go to every rank whole. Gradients are averaged over the
  ranks, so when ``loss_fn`` is a mean over rows (of equal weight: the LM's rows of one group
  have the same number of targets) a step is the 1-process step on the global batch, up to
  float rounding.
- **Logged values are means over the ranks** (the loss is all-reduced every step, so a
  non-finite loss stops every rank; the other logged values at each log step).
- **Rank 0 writes** checkpoints, ``metrics.jsonl`` and ``train_config.json``; the others wait at
  a barrier. A checkpoint holds full, unprefixed tensors (under FSDP gathered to rank 0's CPU),
  in the 1-process format: it loads in one process, and any run resumes from any (DDP, FSDP or
  one process; ``train.fsdp`` may change on resume). Every rank reads the checkpoint rank 0
  picked, so resuming needs the out_dir on a file system all ranks see.
- **Eval**: ``eval_fn`` runs on every rank (on the unwrapped module; under FSDP its forward
  gathers the shards, so it must run everywhere); rank 0's figures are logged.
- **The model afterwards**: under DDP the module passed in is trained in place on every rank.
  Under FSDP a copy of it is sharded (the passed module stays on the CPU; the host holds it
  twice while the copy is made) and at the end the full trained weights are loaded into the
  module passed in on rank 0 only: what writes final outputs should check
  :func:`is_main_process` and then :func:`barrier`.
- The time limit is checked on every rank at each step (before its backward pass), and every
  rank stops at the first step where one of them is over it. Every rank seeds from
  ``train.seed``, so every rank builds the same initial weights.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import gc
import inspect
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
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from videopoet.core.errors import ConfigError
from videopoet.core.serialization import (
    CONFIG_NAME,
    atomic_write,
    load_json,
    load_tensors,
    save_json,
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
#: TrainConfig fields that say how a run uses this machine, not what it makes (a recipe
#: stage's key leaves them out)
RUN_FIELDS = frozenset({"progress", "num_threads", "device", "log_every"})
#: TrainConfig fields a resumed run may change: how long and how it is run and watched, not
#: what it learns.
FREE_FIELDS = RUN_FIELDS | frozenset(
    {
        "steps",
        "time_limit_s",
        "stop_at",
        "eval_every",
        "checkpoint_every",
        "keep_checkpoints",
        "resume",
        "out_dir",
        "allow_config_change",
        "fsdp",
    }
)


#: top-level sections of a run's config a resumed run may change: what is done with the
#: result (the sampling defaults written into the LM's bundle), not what it learns.
FREE_SECTIONS = frozenset({"generation"})


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
    grad_accum: int = Field(
        1,
        ge=1,
        description="micro-batches whose gradients are averaged into one optimizer step: a "
        "step sees batch_size × grad_accum rows (the global batch_size under torchrun)",
    )
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
    stop_at: int | None = Field(
        None,
        ge=1,
        description="stop (with a checkpoint) after this step while the schedule still spans "
        "`steps`: a reproducible early end, where a time limit depends on the machine",
    )
    progress: bool = True
    num_threads: int | None = Field(
        None, ge=1, description="torch CPU threads; 1 avoids thrashing on a shared machine"
    )
    fsdp: bool = Field(
        False, description="under torchrun: shard with FSDP2 (fully_shard) instead of DDP"
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
        and key.split(".")[0] not in FREE_SECTIONS
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


def _optimizer_to_flat(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into named tensors and a JSON remainder."""
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
    *,
    weights: Mapping[str, torch.Tensor] | None = None,
    optimizer_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``checkpoints/step_XXXXXXXX`` atomically (temp dir + rename) and prune old ones.

    ``weights`` and ``optimizer_state``, when given, are written instead of ``model``'s and
    ``optimizer``'s own state dicts (the full tensors gathered from FSDP shards).
    """
    root = _checkpoint_root(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root)
    final = root / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, umask_mode(directory=True))  # mkdtemp makes it 0700 whatever the umask
        if weights is None:
            weights = model.state_dict()
        save_tensors(tmp / MODEL_NAME, weights)  # weights first: as save_pretrained writes
        if model_config is not None:
            save_json(tmp / CONFIG_NAME, model_config)
        if optimizer_state is None:
            optimizer_state = optimizer.state_dict()
        tensors, meta = _optimizer_to_flat(optimizer_state)
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
    checkpoint: _Checkpoint,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Apply a checkpoint; weights of other shapes are a ConfigError, not torch's long report.

    Without ``optimizer`` only the weights (:func:`_restore_optimizer` does the rest, once the
    optimizer is built over the wrapped model's parameters).
    """
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
    if optimizer is not None:
        _restore_optimizer(checkpoint, optimizer)


def _restore_optimizer(checkpoint: _Checkpoint, optimizer: torch.optim.Optimizer) -> None:
    """Optimizer state and RNG states; a full tensor of a sharded (DTensor) parameter's shape
    is cut to this rank's shard first."""
    where = str(checkpoint.path)
    state = checkpoint.optimizer
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if any(_is_dtensor(p) for p in params):
        from torch.distributed.tensor import distribute_tensor

        state = {**state, "state": {}}
        for index, slots in checkpoint.optimizer["state"].items():
            param = params[index] if 0 <= index < len(params) else None
            if _is_dtensor(param):
                slots = {
                    key: distribute_tensor(
                        value.to(param.device_mesh.device_type),
                        param.device_mesh,
                        param.placements,
                        src_data_rank=None,  # every rank read the same file: no communication
                    )
                    if isinstance(value, torch.Tensor) and value.shape == param.shape
                    else value
                    for key, value in slots.items()
                }
            state["state"][index] = slots
    try:
        optimizer.load_state_dict(state)
    except ValueError as exc:  # e.g. another set of trainable parameters
        raise ConfigError("checkpoint", where, f"optimizer state for this model ({exc})") from exc
    if "rng.cpu" in checkpoint.rng:
        torch.set_rng_state(checkpoint.rng["rng.cpu"])
    if "rng.cuda" in checkpoint.rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(checkpoint.rng["rng.cuda"])


# ---------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class Distributed:
    """This process's place in a launch: rank 0 of 1 outside ``torchrun``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _process_group() -> bool:
    return dist.is_available() and dist.is_initialized()


def _destroy_process_group() -> None:
    """At exit: every rank reaches teardown before any closes its connections, and the group's
    objects are freed while the interpreter is whole. Why: a 2-process gloo launch whose ranks
    tore down unsynchronised aborted at exit ("terminate called without an active exception",
    SIGABRT) about once in a hundred launches, after all its work was done. The first collection
    frees DDP/FSDP wrappers no longer referenced while the group they hold is still alive."""
    if not _process_group():
        return
    gc.collect()
    if dist.get_backend() == "gloo" and dist.get_world_size() > 1:
        try:  # bounded: a rank that failed never arrives, and torchrun stops the others anyway
            dist.monitored_barrier(timeout=timedelta(seconds=60))
        except RuntimeError:
            pass
    dist.destroy_process_group()
    gc.collect()


def init_distributed(device: str = "auto") -> tuple[Distributed, torch.device]:
    """Join the ``torchrun`` launch this process belongs to, if any, and pick its device.

    Outside torchrun (no ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in the environment, no
    process group) this is rank 0 of 1 on :func:`resolve_device` ``(device)``. Under torchrun
    with more than one process the process group is initialised once (``nccl`` for a CUDA
    device, ``gloo`` otherwise; destroyed at exit) and a CUDA device is ``cuda:LOCAL_RANK``
    whatever index ``device`` names.
    """
    launched = all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if not (_process_group() or launched):
        return Distributed(), resolve_device(device)
    if _process_group():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    target = resolve_device(device.split(":")[0])  # the kind: the index is LOCAL_RANK's
    if target.type == "cuda":
        count = torch.cuda.device_count()
        if local >= count:
            raise ConfigError(
                "device",
                device,
                f"one CUDA device per process of a node (LOCAL_RANK is {local}, {count} here)",
            )
        target = torch.device("cuda", local)
        torch.cuda.set_device(target)
    if world > 1 and not _process_group():
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
        atexit.register(_destroy_process_group)
    return Distributed(rank, world, local), target


def is_main_process() -> bool:
    """True outside torchrun and on rank 0: the process that writes a run's files."""
    if _process_group():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    """Wait for every process of the launch (returns at once outside torchrun)."""
    if _process_group() and dist.get_world_size() > 1:
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def _leading_sizes(batch: Any) -> list[int]:
    if isinstance(batch, torch.Tensor):
        return [batch.shape[0]] if batch.dim() else []
    if isinstance(batch, Mapping):
        return [n for v in batch.values() for n in _leading_sizes(v)]
    if isinstance(batch, tuple | list):
        return [n for v in batch for n in _leading_sizes(v)]
    return []


def _rows(batch: Any, start: int, count: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.narrow(0, start, count) if batch.dim() else batch
    if isinstance(batch, Mapping):
        return {k: _rows(v, start, count) for k, v in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(_rows(v, start, count) for v in batch)
    return batch


def shard_batch(batch: Any, rank: int, world: int) -> Any:
    """Rank ``rank``'s share of the global ``batch``: rows ``[rank·B/world, (rank+1)·B/world)``.

    Every tensor of one or more dimensions in ``batch`` (looked for inside dicts, lists and
    tuples) is cut along its first dimension, which must be the same ``B`` for all of them and
    a multiple of ``world``; numbers, strings and 0-dim tensors are every rank's whole. A batch
    without such tensors is every rank's whole (each computes the same loss).
    """
    sizes = sorted(set(_leading_sizes(batch)))
    if world == 1 or not sizes:
        return batch
    if len(sizes) > 1:
        raise ConfigError(
            "batch",
            f"first dimensions {sizes}",
            "tensors that share their first (batch) dimension, to split it over the processes",
        )
    if sizes[0] % world:
        raise ConfigError(
            "train.batch_size",
            sizes[0],
            f"a global batch that splits evenly over the {world} processes (a multiple of {world})",
        )
    count = sizes[0] // world
    return _rows(batch, rank * count, count)


def _is_dtensor(value: Any) -> bool:
    if value is None or not dist.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(value, DTensor)


class _LossModule(torch.nn.Module):
    """``loss_fn(model, batch)`` as a forward, so that DDP and FSDP see each computation (a
    ``loss_fn`` may call any method of the model, not only its forward)."""

    def __init__(self, model: torch.nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        return dict(self.loss_fn(self.model, batch))


def _fully_shard(net: torch.nn.Module, device: torch.device, world: int) -> None:
    """FSDP2: each module held in an ``nn.ModuleList`` (transformer blocks ...) is a unit of its
    own, innermost first; what is left (embeddings, heads, norms) is the root's unit."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world,))
    held = {id(m) for lst in net.modules() if isinstance(lst, torch.nn.ModuleList) for m in lst}
    for module in reversed(list(net.modules())):  # children before their parents
        if id(module) in held and next(module.parameters(), None) is not None:
            fully_shard(module, mesh=mesh)
    fully_shard(net, mesh=mesh)


def _full_weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Full CPU weights of an FSDP-sharded ``_LossModule``, its ``model.`` prefix stripped: called
    on every rank (it gathers), complete on rank 0 (the others get an empty dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return {
        name.removeprefix("model."): tensor
        for name, tensor in get_model_state_dict(net, options=options).items()
    }


def _full_optimizer_state(optimizer: torch.optim.Optimizer, main: bool) -> dict[str, Any]:
    """The optimizer state dict with each sharded tensor gathered whole (CPU, on rank 0 only;
    ``None`` elsewhere): called on every rank."""
    state = optimizer.state_dict()  # its slot dicts are the live state: copied, not changed
    gathered: dict[Any, dict[str, Any]] = {}
    for index, slots in state["state"].items():
        gathered[index] = {}
        for key, value in slots.items():
            if _is_dtensor(value):
                value = value.full_tensor()  # collective: every rank, in the same order
                value = value.cpu() if main else None
            gathered[index][key] = value
    return {"state": gathered, "param_groups": state["param_groups"]}


def _mean_over_ranks(values: Mapping[str, float], world: int) -> dict[str, float]:
    """Each key's mean over the ranks that logged it (rank 0's order of keys first)."""
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, dict(values))
    keys = list(dict.fromkeys(k for found in gathered for k in found))
    return {
        k: sum(found[k] for found in gathered if k in found)
        / sum(1 for found in gathered if k in found)
        for k in keys
    }


def _resume_point(out_dir: Path, device: torch.device, ctx: Distributed) -> _Checkpoint | None:
    """The newest intact checkpoint as rank 0 finds it; the other ranks read the same one."""
    if not ctx.active:
        return _newest_intact(out_dir, device)
    found = _newest_intact(out_dir, device) if ctx.main else None
    picked = [str(found.path) if found is not None else None]
    dist.broadcast_object_list(picked, src=0)
    if ctx.main or picked[0] is None:
        return found
    return _read_checkpoint(Path(picked[0]), device)


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


def _check_loss(
    loss: torch.Tensor,
    step: int,
    ctx: Distributed,
    wrapped: torch.nn.Module | None,
    config: TrainConfig,
    began: float,
) -> bool:
    """Raise on a non-finite loss; under torchrun on every rank at once (the loss is
    all-reduced with the time-limit flag, so every rank also stops together). Returns whether
    some rank is over the time limit (False in one process: the loop checks it itself)."""
    if wrapped is None:
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}")
        return False
    over = config.time_limit_s is not None and time.monotonic() - began > config.time_limit_s
    shared = torch.stack([loss.detach().float(), torch.tensor(float(over), device=loss.device)])
    dist.all_reduce(shared)
    mean_loss, over_somewhere = (shared / ctx.world).tolist()
    if not math.isfinite(mean_loss):
        raise FloatingPointError(f"loss is {mean_loss} at step {step} (rank mean)")
    return over_somewhere > 0


def _mean_of(records: list[dict[str, float]]) -> dict[str, float]:
    """Each key's mean over the records that hold it (a task's loss over its micro-batches)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for record in records:
        for key, value in record.items():
            sums[key] = sums.get(key, 0.0) + value
            counts[key] = counts.get(key, 0) + 1
    return {key: total / counts[key] for key, total in sums.items()}


def _micro_batches(batches: Callable[..., Any], accum: int) -> Callable[[int, int], Any]:
    """``draw(step, micro)``: ``batches(step)`` itself without accumulation."""
    if accum == 1:
        return lambda step, micro: batches(step)
    try:
        inspect.signature(batches).bind(0, 0)
    except TypeError:
        raise ConfigError(
            "train.grad_accum",
            accum,
            f"1: this trainer's batches ({getattr(batches, '__qualname__', batches)!s}) takes "
            "only the step, no micro-batch index",
        ) from None
    except ValueError:  # no signature to read (a builtin): let the call say what is wrong
        pass
    return batches


def _gradient_sync(wrapped: torch.nn.Module | None, fsdp: bool, sync: bool) -> Any:
    """Gradients are averaged over the ranks on a step's last micro-batch only."""
    if wrapped is None:
        return contextlib.nullcontext()
    if fsdp:
        wrapped.set_requires_gradient_sync(sync)  # type: ignore[operator]
        return contextlib.nullcontext()
    return contextlib.nullcontext() if sync else wrapped.no_sync()  # type: ignore[operator]


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


def _evaluate_on(
    root: torch.nn.Module | None, model: torch.nn.Module, eval_fn: EvalFn
) -> dict[str, float]:
    """:func:`_evaluate`; with an FSDP ``root`` (on every rank) its own unit's weights are
    gathered around the call, since ``eval_fn`` calls ``model`` directly, not the root."""
    if root is None:
        return _evaluate(model, eval_fn)
    root.unshard()  # type: ignore[operator]
    try:
        return _evaluate(model, eval_fn)
    finally:
        root.reshard()  # type: ignore[operator]


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
    ctx, device = init_distributed(config.device)
    fsdp = config.fsdp and ctx.active
    prepare_run(config)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("model", type(model).__name__, "a module with trainable parameters")
    # Under FSDP a copy is sharded: ``model`` stays whole and gets the trained weights at the end.
    work = copy.deepcopy(model) if fsdp else model.to(device)
    work.train()
    if ctx.main:
        _remove_stale_temporaries(_checkpoint_root(out_dir))
    barrier()
    start, resumed_from, changes = 0, None, {}
    logged: dict[str, float] = {}
    evaluated: dict[str, float] = {}
    previous = (
        _resume_point(out_dir, torch.device("cpu") if fsdp else device, ctx)
        if config.resume
        else None
    )
    if previous is not None:
        changes = check_resume_config(config, run_config)  # before weights of another shape
        _restore(previous, work)  # the weights, before they are wrapped or sharded
        start = resumed_from = previous.step
        for key, value in previous.metrics.items():
            if key.startswith("eval/"):
                evaluated[key.removeprefix("eval/")] = value
            else:
                logged[key] = value
    wrapped: torch.nn.Module | None = None
    if ctx.active:
        wrapped = _LossModule(work, loss_fn)
        if fsdp:
            _fully_shard(wrapped, device, ctx.world)
        else:
            wrapped = torch.nn.parallel.DistributedDataParallel(
                wrapped,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True,  # e.g. the text projection on a task without text
            )
    params = [p for p in work.parameters() if p.requires_grad]  # FSDP: this rank's shards
    optimizer = torch.optim.AdamW(
        params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
    if previous is not None:
        _restore_optimizer(previous, optimizer)
    if ctx.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _cut_metrics(out_dir, start)
        save_json(out_dir / RUN_CONFIG_NAME, _run_record(config, run_config))
        if changes:
            shown = "; ".join(f"{k}: {o!r} -> {n!r}" for k, (o, n) in changes.items())
            _warn(f"resuming {out_dir} at step {start} with a changed config: {shown}")
            _append_metrics(
                out_dir,
                {"step": start, "config_change": {k: list(v) for k, v in changes.items()}},
            )
    autocast = config.dtype == "bfloat16"
    draw = _micro_batches(batches, config.grad_accum) if callable(batches) else None
    iterator = None if draw is not None else iter(batches)  # type: ignore[arg-type]

    from tqdm.auto import tqdm

    if previous is not None and start >= config.steps and ctx.main:
        tqdm.write(
            f"the run in {out_dir} is already complete at step {start} ({previous.path}); "
            "raise train.steps to train further",
            file=sys.stderr,
        )
    bar = tqdm(
        total=config.steps,
        initial=start,
        desc=f"train {out_dir.name}",
        disable=not config.progress or start >= config.steps or not ctx.main,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    began = time.monotonic()
    checkpoint: Path | None = previous.path if previous is not None else None
    step = start
    try:
        while step < config.steps:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, config)
            optimizer.zero_grad(set_to_none=True)
            micro_losses: list[Mapping[str, Any]] = []
            for micro in range(config.grad_accum):
                batch = draw(step, micro) if draw is not None else next(iterator)  # type: ignore[arg-type]
                if ctx.active:
                    batch = shard_batch(batch, ctx.rank, ctx.world)
                batch = to_device(batch, device)
                with _gradient_sync(wrapped, fsdp, micro == config.grad_accum - 1):
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                        losses = wrapped(batch) if wrapped is not None else loss_fn(work, batch)
                    if "loss" not in losses:
                        raise ConfigError(
                            "loss_fn", sorted(losses), "a dict holding the key 'loss'"
                        )
                    loss = losses["loss"]
                    over_somewhere = _check_loss(loss, step, ctx, wrapped, config, began)
                    (loss / config.grad_accum).backward()  # / 1 is exact: K=1 is the plain step
                micro_losses.append(
                    {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in losses.items()}
                )
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            step += 1
            bar.update(1)
            if step % config.log_every == 0 or step == config.steps:
                logged = _mean_of([_scalars(values) for values in micro_losses])
                if ctx.active:
                    logged = _mean_over_ranks(logged, ctx.world)
                if ctx.main:
                    bar.set_postfix({k: f"{v:.4g}" for k, v in list(logged.items())[:4]})
                    _append_metrics(
                        out_dir, {"step": step, "lr": optimizer.param_groups[0]["lr"], **logged}
                    )
            if wrapped is not None:
                out_of_time = over_somewhere
            else:
                out_of_time = (
                    config.time_limit_s is not None
                    and time.monotonic() - began > config.time_limit_s
                )
            stopped = config.stop_at is not None and step >= config.stop_at
            last = step == config.steps or out_of_time or stopped
            if eval_fn is not None and (
                last or (config.eval_every and step % config.eval_every == 0)
            ):
                evaluated = _evaluate_on(wrapped if fsdp else None, work, eval_fn)
                if ctx.main:
                    shown = ", ".join(f"{k}={v:.4g}" for k, v in evaluated.items())
                    bar.write(f"step {step}: {shown}", file=sys.stderr)
                    _append_metrics(out_dir, {"step": step, "eval": evaluated})
            if last or (config.checkpoint_every and step % config.checkpoint_every == 0):
                weights, optimizer_state = None, None
                if fsdp:  # every rank gathers; rank 0 holds the full tensors
                    weights = _full_weights(wrapped)  # type: ignore[arg-type]
                    optimizer_state = _full_optimizer_state(optimizer, ctx.main)
                if ctx.main:
                    checkpoint = save_checkpoint(
                        out_dir,
                        step,
                        work,
                        optimizer,
                        {**logged, **{f"eval/{k}": v for k, v in evaluated.items()}},
                        model_config,
                        config.keep_checkpoints,
                        weights=weights,
                        optimizer_state=optimizer_state,
                    )
                else:
                    checkpoint = _checkpoint_root(out_dir) / f"step_{step:08d}"
                barrier()  # written before any rank goes on (or returns)
            if out_of_time:
                if ctx.main:
                    bar.write(
                        f"time limit of {config.time_limit_s:g} s reached at step {step}",
                        file=sys.stderr,
                    )
                break
            if stopped:
                if ctx.main:
                    bar.write(f"stopped at step {step} (train.stop_at)", file=sys.stderr)
                break
    finally:
        bar.close()
    if fsdp:  # the module passed in gets the trained weights (rank 0: the one that writes)
        weights = _full_weights(wrapped)  # type: ignore[arg-type]
        if ctx.main:
            model.load_state_dict(weights)
    return {
        "step": step,
        "metrics": logged,
        "eval": evaluated,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "resumed_from": resumed_from,
        "seconds": time.monotonic() - began,
    }
