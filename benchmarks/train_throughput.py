"""LM trainer throughput on the task mixture: AGD batches against padded batches, one run.

What is timed is the optimizer step of the LM trainer, written out here (``Run.step``) rather
than run through :func:`videopoet.core.training.train`: the two batchings must alternate step
by step from the same weights, and ``train`` owns its loop. Per step, inside the timer: the
batch drawn by :class:`videopoet.core.lm_training.MixtureSampler` from token shards
(memory-mapped reads, condition dropout included; for ``padded`` the padding too), then the
calls ``train`` makes for one micro-batch of a one-process float32 run:
:func:`~videopoet.core.lm_training.lm_task_loss` (the forward), backward, gradient clipping at
``train.grad_clip`` and an AdamW step (``lr``, ``betas``, ``weight_decay`` of the config),
with ``configs/lm/tiny.yaml``'s mixture, stages, dropout and batch size, on the CPU.

Left out, and why the figures are still the trainer's step: the learning-rate schedule (the lr
stays at ``train.lr``; its value does not change a step's cost), metrics logging, periodic
eval and checkpoints (outside the step; they are amortised over ``log_every`` /
``eval_every`` / ``checkpoint_every`` steps in a real run), DDP/FSDP, ``train.grad_accum``
(K micro-batches cost K of these steps' forward and backward, with one clip and AdamW step)
and ``train.dtype: bfloat16`` autocast (this runs float32 whatever the config says;
``tiny.yaml`` sets neither). The figures are therefore a float32, one-process, one
micro-batch step with its data loading, not an end-to-end ``videopoet train`` rate.

Two ways of batching the same draws:

``agd``
    alternating gradient descent (paper 4.2), what the trainer does: one task at one layout
    per batch, so every token is real;
``padded``
    the same batch right-padded with ``<pad>`` to the longest layout in the mixture and the
    pads never scored, as a trainer that batches across tasks must. Right pads come after
    every real position, so no real position sees them and the loss is exactly the same
    (checked on the first batch and printed).

Useful throughput counts only non-padding tokens, so ``agd_vs_padded`` is the ratio of real
tokens per second. The two runs start from the same weights and alternate step by step (each
with its own model and optimiser), so load on a shared machine hits both alike. The steps drawn
are spread evenly over the config's whole schedule (``train.steps``), so the image/video stages
are represented as in a full run.

Data: ``runs/tiny_bundle`` and ``runs/tiny_shards`` when both exist (read only), else an
untrained tiny bundle and small shards written to a temporary folder (``--make-shards`` forces
that). Usage: ``python benchmarks/train_throughput.py [--steps 24]``. The last line is one
JSON object of the figures.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from _lm_setup import set_threads  # a sibling module of these scripts

from videopoet.core.lm_training import (
    PAD_ID,
    LMTrainingConfig,
    MixtureSampler,
    TokenizeConfig,
    WorldData,
    lm_task_loss,
    tokenize,
)

ROOT = Path(__file__).resolve().parents[1]


def make_data(folder: Path, examples: int) -> tuple[Path, Path]:
    """An untrained tiny bundle and train shards of ``examples`` per task, in ``folder``."""
    from videopoet.cli_generate import TINY_AUDIO, TINY_VISUAL
    from videopoet.core.engine import Engine

    bundle = folder / "bundle"
    Engine.create(preset="tiny", visual_dir=TINY_VISUAL, audio_dir=TINY_AUDIO).save_pretrained(
        bundle
    )
    shards = folder / "shards"
    world = WorldData(examples_per_task=examples, eval_examples_per_task=0)
    tokenize(TokenizeConfig(bundle=str(bundle), out=str(shards), world=world), progress=False)
    return bundle, shards


def pad_batch(batch: dict, length: int) -> dict:
    """``batch`` right-padded with ``<pad>`` to ``length``, the pads never scored.

    Pads after the target come after every real position, so no real query sees them (a
    prefix query sees the prefix and earlier positions, a target query earlier positions):
    they need no key mask, and the loss is exactly the unpadded one. The grid positions (an LM
    with ``grid_positions``) are padded with place (0, 0, 0): only the pads' own unscored
    states see it."""
    tokens = batch["tokens"]
    rows, real = tokens.shape
    padded = dict(batch)
    padded["tokens"] = torch.nn.functional.pad(tokens, (0, length - real), value=PAD_ID)
    padded["loss_mask"] = (torch.arange(length) < real).expand(rows, length)
    if batch.get("grid") is not None:  # (B, L, 3) or (L, 3): a pad's place is never seen
        padded["grid"] = torch.nn.functional.pad(batch["grid"], (0, 0, 0, length - real))
    if batch.get("key_mask") is not None:  # dropped conditions stay dropped
        padded["key_mask"] = torch.nn.functional.pad(
            batch["key_mask"], (0, length - real), value=True
        )
    return padded


class Run:
    """One model and optimiser, stepping as the shared trainer does for one float32 micro-batch
    (see the module docstring for what ``train`` adds around it)."""

    def __init__(self, model: torch.nn.Module, train) -> None:
        self.model = copy.deepcopy(model).train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=train.lr, betas=train.betas, weight_decay=train.weight_decay
        )
        self.clip = train.grad_clip
        self.seconds = 0.0
        self.real_tokens = 0
        self.processed_tokens = 0

    def step(self, draw, timed: bool) -> float:
        start = time.perf_counter()
        batch, real = draw()
        loss = lm_task_loss(self.model, batch)["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optimizer.step()
        if timed:
            self.seconds += time.perf_counter() - start
            self.real_tokens += real
            self.processed_tokens += batch["tokens"].numel()
        return float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs/lm/tiny.yaml"))
    parser.add_argument("--bundle", default=str(ROOT / "runs/tiny_bundle"))
    parser.add_argument("--shards", default=str(ROOT / "runs/tiny_shards"))
    parser.add_argument("--make-shards", action="store_true", help="write fresh tiny data")
    parser.add_argument("--examples", type=int, default=16, help="per task, with --make-shards")
    parser.add_argument("--steps", type=int, default=24, help="timed steps of each mode")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument(
        "--threads", type=int, default=None, help="default: the config's train.num_threads"
    )
    args = parser.parse_args()

    from videopoet.core.engine import Engine
    from videopoet.core.tokenizer_training import load_config, validate_section
    from videopoet.data.shards import TokenShards, engine_identity

    raw = load_config(args.config)
    bundle, shards_dir = Path(args.bundle), Path(args.shards)
    scratch = None
    if args.make_shards or not (bundle.is_dir() and (shards_dir / "meta.json").is_file()):
        scratch = tempfile.TemporaryDirectory(prefix="train_throughput_")
        began = time.perf_counter()
        bundle, shards_dir = make_data(Path(scratch.name), args.examples)
        print(f"wrote a tiny bundle and shards in {time.perf_counter() - began:.0f} s")
    raw = {**raw, "bundle": str(bundle), "shards": str(shards_dir)}
    config = validate_section(LMTrainingConfig, raw, "")
    train = config.train
    if args.batch_size:
        train = train.model_copy(update={"batch_size": args.batch_size})
        config = config.model_copy(update={"train": train})
    if train.dtype != "float32" or train.grad_accum != 1:
        print(
            f"note: train.dtype {train.dtype} and train.grad_accum {train.grad_accum} are not "
            "applied: the step timed is one float32 micro-batch (see the docstring)"
        )
    threads = set_threads(train.num_threads if args.threads is None else args.threads)
    torch.manual_seed(train.seed)

    engine = Engine.from_pretrained(bundle)
    shards = TokenShards(shards_dir, engine_identity(engine))
    if config.mixture:  # own shards may hold fewer tasks than the config mixes
        present = set(shards.tasks("train"))
        mixture = {t: w for t, w in config.mixture.items() if t in present}
        dropout = {t: p for t, p in config.dropout.items() if t in present}
        config = config.model_copy(update={"mixture": mixture, "dropout": dropout})
    sampler = MixtureSampler(shards, config, engine.registry)
    longest = max(g.length for g in shards.of("train") if g.task in sampler.weights)
    steps = [round(k * train.steps / args.steps) for k in range(args.steps)]
    print(
        f"LM {engine.lm.num_parameters() / 1e6:.2f}M parameters (d_model "
        f"{engine.lm.config.d_model}, {engine.lm.config.n_layers} layers); batch "
        f"{train.batch_size}; {len(sampler.weights)} tasks, layouts up to {longest} tokens; "
        f"{args.steps} steps spread over {train.steps}; threads {threads}"
    )

    runs = {"agd": Run(engine.lm, train), "padded": Run(engine.lm, train)}

    def draw(mode: str, step: int):
        def fn():
            batch = sampler.batch(step)
            real = batch["tokens"].numel()
            return (pad_batch(batch, longest) if mode == "padded" else batch), real

        return fn

    warm = train.steps - 1  # a warm-up step of each mode, not timed
    first = {mode: run.step(draw(mode, warm), timed=False) for mode, run in runs.items()}
    loss_gap = abs(first["agd"] - first["padded"])
    print(f"same batch, same weights: |loss agd - loss padded| = {loss_gap:.2e}")
    tasks: dict[str, int] = {}
    for step in steps:
        task = sampler.batch(step)["task"]  # the draw is a function of the step alone
        tasks[task] = tasks.get(task, 0) + 1
        for mode, run in runs.items():
            run.step(draw(mode, step), timed=True)
    print("batches by task: " + ", ".join(f"{t} {n}" for t, n in sorted(tasks.items())))

    figures = {}
    for mode, run in runs.items():
        tps = run.real_tokens / run.seconds
        figures[mode] = tps
        pad_share = 1 - run.real_tokens / run.processed_tokens
        print(
            f"{mode:>6}: {run.seconds:6.1f} s, {tps:8.1f} real tokens/s "
            f"({run.processed_tokens / run.seconds:8.1f} processed, {pad_share:.0%} padding)"
        )
    ratio = figures["agd"] / figures["padded"]
    print(f"AGD / padded: {ratio:.2f}x real tokens per second")
    padded = runs["padded"]
    print(
        json.dumps(
            {
                "agd_vs_padded": round(ratio, 3),
                "load_average_1m": round(os.getloadavg()[0], 2),
                "tokens_per_s_agd": round(figures["agd"], 1),
                "tokens_per_s_padded": round(figures["padded"], 1),
                "padding_share_padded": round(1 - padded.real_tokens / padded.processed_tokens, 3),
                "real_tokens": runs["agd"].real_tokens,
                "steps": args.steps,
                "batch_size": train.batch_size,
                "longest_layout": longest,
                "first_batch_loss_gap": loss_gap,
                "threads": threads,
                "params": engine.lm.num_parameters(),
                "data": "own tiny shards" if scratch else str(shards_dir),
            }
        )
    )
    if scratch is not None:
        scratch.cleanup()


if __name__ == "__main__":
    main()
