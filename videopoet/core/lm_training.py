"""Training the prefix LM on a mixture of tasks (paper 4.2, 5.1).

``videopoet tokenize CONFIG`` runs each task's example builder over a dataset once and writes
token shards (:mod:`videopoet.data.shards`); ``videopoet train CONFIG`` trains the bundle's LM
on them with :func:`videopoet.core.training.train` (checkpoints, exact resume, metrics):

- **alternating gradient descent**: each step draws one group (one task at one layout, so
  one length) and a batch from it: no padding tokens, no mixed tasks in a batch;
- **the two-stage schedule**: image tasks make ``stages.image_share_first`` of the steps
  during the first ``stages.first_fraction`` of training, ``stages.image_share_after`` later
  (the paper: 90 % image first, then 90 % video);
- **condition dropout**: with probability ``dropout[task]`` an example loses the inputs its
  task drops for classifier-free guidance, exactly as generation's unconditional branch does
  (text slots masked and zeroed, a condition span set to ``<pad>`` and masked as keys), so
  that branch is trained;
- the batch of step ``s`` is a function of ``(train.seed, s)`` alone, so a resumed run sees
  the same data as an uninterrupted one.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from videopoet.core.errors import ConfigError
from videopoet.core.training import TrainConfig

PAD_ID = 0


class WorldData(BaseModel):
    """Which world samples ``videopoet tokenize`` draws."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    examples_per_task: int = Field(200, ge=1)
    eval_examples_per_task: int = Field(16, ge=0)
    start_index: int = Field(0, ge=0)


class TokenizeConfig(BaseModel):
    """``videopoet tokenize CONFIG.yaml``."""

    model_config = ConfigDict(extra="forbid")

    bundle: str = Field(description="the bundle whose tokenizers, text encoder, vocabulary")
    out: str = Field(description="the shard folder to write")
    tasks: list[str] | None = Field(None, description="default: every task the bundle runs")
    format: str | None = Field(None, description="video format (default: the bundle's first)")
    world: WorldData = WorldData()


class Stages(BaseModel):
    model_config = ConfigDict(extra="forbid")

    first_fraction: float = Field(0.25, ge=0, le=1)
    image_share_first: float = Field(0.9, ge=0, le=1)
    image_share_after: float = Field(0.1, ge=0, le=1)


class LMTrainingConfig(BaseModel):
    """``videopoet train CONFIG.yaml``: data, mixture, schedule, dropout, optimisation."""

    model_config = ConfigDict(extra="forbid")

    bundle: str = Field(description="the bundle to start from (videopoet init, or a trained one)")
    shards: str = Field(description="folder written by videopoet tokenize for this bundle")
    mixture: dict[str, float] | None = Field(
        None, description="task -> weight (default: every task in the shards, weight 1)"
    )
    stages: Stages = Stages()
    dropout: dict[str, float] = Field(
        default_factory=dict, description="task -> condition dropout probability"
    )
    default_dropout: float = Field(0.1, ge=0, le=1)
    eval_batches: int = Field(1, ge=0, description="held-out batches per task at each eval")
    train: TrainConfig = TrainConfig()


# ---------------------------------------------------------------------------- tokenize


def tokenize(config: TokenizeConfig, progress: bool = True) -> dict[str, Any]:
    """Write the shards of ``config``; returns a summary (examples and groups per split)."""
    from tqdm.auto import tqdm

    from videopoet.core.engine import Engine
    from videopoet.data import world
    from videopoet.data.shards import ShardWriter, engine_identity

    engine = Engine.from_pretrained(config.bundle)
    tasks = config.tasks or engine.tasks()
    unknown = sorted(set(tasks) - set(engine.tasks()))
    if unknown:
        raise ConfigError("tasks", unknown, f"tasks this bundle runs: {engine.tasks()}")
    video_format = engine.pick_format(engine.registry.task("t2v"), config.format)
    cfg = world.WorldConfig(seed=config.world.seed)
    writer = ShardWriter(config.out, engine_identity(engine), engine.lm.config.text_dim)
    splits = (
        ("train", config.world.start_index, config.world.examples_per_task),
        ("eval", world.EVAL_OFFSET, config.world.eval_examples_per_task),
    )
    total = len(tasks) * sum(n for _, _, n in splits)
    bar = tqdm(total=total, desc="tokenize", disable=not progress, dynamic_ncols=True)
    chunk = 8  # samples tokenized together: their clips are encoded in batches
    for split, start, count in splits:
        for first in range(0, count, chunk):
            indices = range(start + first, start + min(count, first + chunk))
            with engine.reuse_encodings():
                built = [_build_examples(engine, tasks, i, video_format, cfg) for i in indices]
                clips = [pair for examples in built for ex in examples for pair in _clips(ex)]
                engine.prime_encodings(clips)
                for examples in built:
                    for example in examples:
                        writer.add(split, engine.encode_example(example))
                        bar.update(1)
    bar.close()
    path = writer.write({"bundle": str(config.bundle), "format": str(video_format)})
    return {
        "shards": str(path),
        "tasks": tasks,
        "groups": {s: sum(1 for (sp, _, _) in writer.groups if sp == s) for s, _, _ in splits},
        "examples": {s: len(tasks) * n for s, _, n in splits},
    }


def _build_examples(engine: Any, tasks: list[str], index: int, video_format: Any, cfg: Any) -> list:
    from videopoet.data import world
    from videopoet.tasks.base import Source

    source = Source.from_world(world.sample(index, *_frames_hw(video_format), cfg))
    out = []
    for t, task in enumerate(tasks):
        spec = engine.registry.task(task)
        fmt = engine.pick_format(spec, None if spec.target.visual == "image" else video_format)
        out.append(engine.build_example(task, source, fmt, index * 1009 + t))
    return out


def _clips(example: Any) -> list[tuple[torch.Tensor, Any]]:
    """The (clip, mask) pairs ``encode_example`` will encode for ``example``."""
    conditions = example.conditions
    pairs = [(clip, conditions.masks.get(name)) for name, clip in conditions.visual.items()]
    if example.video is not None:
        pairs.append((example.video, None))
    return pairs


def _frames_hw(fmt: Any) -> tuple[int, int, int]:
    return fmt.frames, fmt.height, fmt.width


# ---------------------------------------------------------------------------- batches


class MixtureSampler:
    """The batch of each step: stage → image/video → task by weight → group → examples."""

    def __init__(self, shards: Any, config: LMTrainingConfig, registry: Any, split: str = "train"):
        self.shards, self.config, self.split = shards, config, split
        present = shards.tasks(split)
        weights = config.mixture or {t: 1.0 for t in present}
        missing = sorted(set(weights) - set(present))
        if missing:
            raise ConfigError("mixture", missing, f"tasks present in the shards: {present}")
        for task, weight in weights.items():
            if weight < 0:
                raise ConfigError(f"mixture.{task}", weight, "a weight >= 0")
        self.weights = {t: w for t, w in weights.items() if w > 0}
        if not self.weights:
            raise ConfigError("mixture", weights, "at least one task with a positive weight")
        for task, p in config.dropout.items():
            if task not in self.weights:
                raise ConfigError(
                    f"dropout.{task}", p, f"a task of the mixture: {list(self.weights)}"
                )
            if not 0 <= p <= 1:
                raise ConfigError(f"dropout.{task}", p, "a probability in [0, 1]")
        self.specs = {t: registry.task(t) for t in self.weights}
        self.image = [t for t, s in self.specs.items() if s.target.visual == "image"]
        self.video = [t for t in self.weights if t not in self.image]

    def image_share(self, step: int) -> float | None:
        """Probability of an image task at ``step``; None when only one kind is in the mix."""
        if not self.image or not self.video:
            return None
        stages, steps = self.config.stages, self.config.train.steps
        first = step < stages.first_fraction * steps
        return stages.image_share_first if first else stages.image_share_after

    def pick_task(self, rng: random.Random, step: int) -> str:
        share = self.image_share(step)
        pool = list(self.weights)
        if share is not None:
            pool = self.image if rng.random() < share else self.video
        return rng.choices(pool, weights=[self.weights[t] for t in pool])[0]

    def batch(self, step: int, batch_size: int | None = None) -> dict[str, Any]:
        seed = self.config.train.seed
        rng = random.Random(f"{seed}/{self.split}/{step}")
        task = self.pick_task(rng, step)
        return self.task_batch(task, rng, batch_size)

    def task_batch(
        self, task: str, rng: random.Random, batch_size: int | None = None, dropout: bool = True
    ) -> dict[str, Any]:
        groups = self.shards.of(self.split, task)
        group = rng.choices(groups, weights=[g.count for g in groups])[0]
        size = batch_size or self.config.train.batch_size
        rows = (
            rng.sample(range(group.count), size)
            if group.count >= size
            else [rng.randrange(group.count) for _ in range(size)]
        )
        rows.sort()
        arrays = self.shards.arrays(group)
        tokens = torch.from_numpy(arrays["tokens"][rows].astype("int64"))
        batch: dict[str, Any] = {
            "tokens": tokens,
            "prefix_length": group.prefix_length,
            "task": task,
            "group": group.key,
        }
        if group.text_slots:
            batch["text_embeddings"] = torch.from_numpy(arrays["text"][rows].astype("float32"))
            batch["text_mask"] = torch.from_numpy(arrays["text_mask"][rows].copy())
            batch["text_start"] = group.text_start
        p = self.config.dropout.get(task, self.config.default_dropout) if dropout else 0.0
        if not self.specs[task].cfg_drop:
            p = 0.0  # nothing is dropped for guidance: no unconditional branch to train
        dropped = [rng.random() < p for _ in rows]
        if any(dropped):
            drop_conditions(batch, group, self.specs[task].cfg_drop, dropped)
        batch["dropped"] = sum(dropped)
        return batch


def drop_conditions(
    batch: dict[str, Any], group: Any, names: tuple[str, ...], rows: list[bool]
) -> None:
    """Remove the ``cfg_drop`` inputs from the rows marked True, as generation's
    unconditional branch does: text masked and zeroed; a span set to <pad>, masked as keys."""
    which = torch.tensor(rows)
    key_mask = torch.ones(batch["tokens"].shape, dtype=torch.bool)  # every key, target too
    for name in names:
        spans = (
            [s for n, s in group.conditions.items() if n not in ("text", "audio")]
            if name == "visual"
            else [group.conditions[name]]
            if name in group.conditions
            else []
        )
        if name == "text" and "text_mask" in batch:
            batch["text_mask"][which] = False
            batch["text_embeddings"][which] = 0.0
            continue
        for start, stop in spans:
            batch["tokens"][which, start:stop] = PAD_ID
            key_mask[which, start:stop] = False
    if not bool(key_mask.all()):
        batch["key_mask"] = key_mask


# ---------------------------------------------------------------------------- training


def lm_task_loss(model: Any, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The LM loss, also logged under the batch's task (``loss/<task>``)."""
    from videopoet.core.model import lm_loss_fn

    loss = lm_loss_fn(model, batch)["loss"]
    return {"loss": loss, f"loss/{batch['task']}": loss.detach()}


def train_lm(raw: dict[str, Any]) -> dict[str, Any]:
    """Train from a loaded config dict; the result names the written bundle."""
    from videopoet.core.engine import Engine
    from videopoet.core.tokenizer_training import validate_section
    from videopoet.core.training import (
        check_resume_config,
        ensure_out_dir,
        prepare_run,
        train,
    )
    from videopoet.data.shards import TokenShards, engine_identity

    config = validate_section(LMTrainingConfig, raw, "")
    train_config = config.train
    run_config = config.model_dump(mode="json", exclude={"train"})
    check_resume_config(train_config, run_config)
    out_dir = ensure_out_dir(train_config.out_dir)
    prepare_run(train_config)
    engine = Engine.from_pretrained(config.bundle)
    shards = TokenShards(config.shards, engine_identity(engine))
    sampler = MixtureSampler(shards, config, engine.registry)
    held_out = (
        MixtureSampler(shards, config, engine.registry, "eval") if shards.of("eval") else None
    )
    model = engine.lm.train()

    def eval_fn(net: torch.nn.Module) -> dict[str, float]:
        if held_out is None or config.eval_batches == 0:
            return {}
        out = {}
        with torch.no_grad():
            for task in held_out.weights:
                if not shards.of("eval", task):
                    continue
                losses = []
                for k in range(config.eval_batches):
                    rng = random.Random(f"eval/{task}/{k}")
                    batch = held_out.task_batch(task, rng, dropout=False)
                    losses.append(float(lm_task_loss(net, batch)["loss"]))
                out[f"loss/{task}"] = sum(losses) / len(losses)
        if out:
            out["loss"] = sum(out.values()) / len(out)
        return out

    result = train(
        model,
        lm_task_loss,
        sampler.batch,
        train_config,
        eval_fn,
        {"kind": "videopoet.prefix_lm", "model": model.config.model_dump(mode="json")},
        run_config,
    )
    # ``model`` is the plain module (train wraps it for DDP/FSDP itself); under torchrun rank 0
    # holds the trained weights and writes the bundle, the other ranks wait for it.
    from videopoet.core.training import barrier, is_main_process

    engine.lm = model.eval()
    bundle = Path(out_dir) / "bundle"
    if is_main_process():
        bundle = engine.save_pretrained(bundle, description="trained by videopoet train")
    barrier()
    return {**result, "bundle": str(bundle)}


def train_lm_from_yaml(path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    from videopoet.core.tokenizer_training import load_config

    return train_lm(load_config(path, overrides))


def tokenize_from_yaml(path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    from videopoet.core.tokenizer_training import load_config, validate_section

    config = validate_section(TokenizeConfig, load_config(path, overrides), "")
    return tokenize(config)


def bundle_from_run(run_dir: str | Path, out: str | Path, step: int | None = None) -> Path:
    """A bundle from a training run's checkpoint (the newest, or ``step``): pick the step
    with the best held-out loss from ``metrics.jsonl`` and export it without training on."""
    from videopoet.core.engine import Engine
    from videopoet.core.serialization import load_json
    from videopoet.core.training import list_checkpoints, load_checkpoint_weights

    run_dir = Path(run_dir)
    record = run_dir / "train_config.json"
    if not record.is_file():
        raise ConfigError("run", str(run_dir), "a folder written by videopoet train")
    checkpoints = {int(p.name.removeprefix("step_")): p for p in list_checkpoints(run_dir)}
    if not checkpoints:
        raise ConfigError("run", str(run_dir), "a run with at least one checkpoint")
    chosen = max(checkpoints) if step is None else step
    if chosen not in checkpoints:
        raise ConfigError("step", step, f"one of the kept checkpoints {sorted(checkpoints)}")
    bundle = load_json(record).get("bundle")
    if not bundle:
        raise ConfigError(str(record), None, "the run's config with its starting bundle")
    engine = Engine.from_pretrained(bundle)
    state = load_checkpoint_weights(checkpoints[chosen])
    engine.lm.load_state_dict(state)
    return engine.save_pretrained(out, description=f"{run_dir} at step {chosen}")
