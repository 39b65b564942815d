"""Training throughput and model FLOPs utilisation (MFU) of the prefix LM on this machine.

One optimizer step over a mixed batch, one micro-batch per task as AGD batches them (a batch
shares one task and one length): by default text-to-video (64 text slots of which 40 used,
1,280 visual targets) and video-to-audio (1,280 visual inputs, 424 audio targets); ``--tasks``
adds e.g. ``i2v``. Paper formats, float32, gradients accumulated over the micro-batches, then
AdamW. One warm-up step, then ``--steps`` timed steps; the figures use the **median** step.

MFU = model FLOPs per second / this machine's float32 matmul peak, measured in the same run
with the same threads (the best of several large ``torch.matmul`` calls, before and after the
steps). Model FLOPs (PaLM's convention, appendix B): ``6 · N · tokens`` for the transformer's
weight matrices, ``6 · N_head · scored tokens`` for the output head (it runs only on target
positions), ``6 · N_text · text slots`` for the text projection, and ``12 · layers · d_model ·
L²`` per sequence for attention scores and values. Embedding look-ups count as zero. The
output shows each part's share.

Two configurations (``--config``; ``--layers`` etc. override their shapes):

``paper`` (default)
    4 layers, d_model 256, the real 266,496-id vocabulary: the output head (256 × 266,496,
    on every target token) is most of the FLOPs, so this measures the head's matmuls.
``transformer``
    8 layers, d_model 512, a 1,024-code visual codebook (vocabulary 5,376): the same layouts
    and sequence lengths, with the transformer's matmuls and attention as most of the FLOPs.

All cores by default (``--threads``). Usage: ``python benchmarks/train_step.py [--config
transformer] [--steps 5]``. The last line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from _lm_setup import add_model_args, build_model  # a sibling module of these scripts

from videopoet.core.declarations import Format
from videopoet.core.model import ModelConfig
from videopoet.core.plugins import get_registry
from videopoet.core.vocabulary import Vocabulary
from videopoet.sequences.layout import build_layout

CONFIGS = {
    "paper": {"layers": 4, "width": 256, "heads": 4, "visual_bits": None},
    "transformer": {"layers": 8, "width": 512, "heads": 8, "visual_bits": 10},
}


def matmul_peak(dtype: torch.dtype, size: int = 4096, repeats: int = 4) -> float:
    """Best GFLOP/s of a large square matmul (the machine's practical peak)."""
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    a @ b
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def mixed_batch(
    registry, vocab, text_dim: int, generator: torch.Generator, tasks: list[str]
) -> list[dict]:
    """One example per task with random ids inside each span's range and random text."""
    fmt = Format(frames=17, height=128, width=128)
    out = []
    for name in tasks:
        layout = build_layout(registry.task(name), vocab, fmt)
        content = {
            s.name: torch.randint(
                0, min(hi - lo for lo, hi in s.ranges), (1, s.length), generator=generator
            )
            for s in layout.content_spans
        }
        example = {"tokens": layout.fill(content), "prefix_length": layout.prefix_length}
        if layout.text_span is not None:
            slots = layout.text_span.length
            used = 40  # a caption shorter than the 64 slots: the rest is masked padding
            example["text_embeddings"] = torch.randn(1, slots, text_dim, generator=generator)
            example["text_mask"] = torch.arange(slots)[None] < used
            example["text_start"] = layout.text_span.start
        out.append(example)
    return out


def model_flops(config: ModelConfig, batch: list[dict]) -> dict[str, float]:
    """Model FLOPs of one training step (forward + backward), by part."""
    d, f, n = config.d_model, config.hidden_dim, config.n_layers
    body = n * (4 * d * d + 3 * d * f)
    parts = {"transformer": 0.0, "attention": 0.0, "head": 0.0, "text": 0.0}
    for example in batch:
        length = example["tokens"].shape[1]
        scored = length - example["prefix_length"]
        slots = example["text_embeddings"].shape[1] if "text_embeddings" in example else 0
        parts["transformer"] += 6 * body * length
        parts["attention"] += 12 * n * d * length**2
        parts["head"] += 6 * d * config.vocab_size * scored
        parts["text"] += 6 * config.text_dim * d * slots
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="paper")
    add_model_args(parser, layers=None, width=None, heads=None, threads=0)
    parser.add_argument(
        "--visual-bits", type=int, default=None, help="visual codebook bits (default: --config)"
    )
    parser.add_argument("--tasks", default="t2v,v2a", help="one micro-batch per task")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up")
    args = parser.parse_args()
    for key, value in CONFIGS[args.config].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    dtype = torch.float32
    registry = get_registry()
    vocab = None
    if args.visual_bits is not None:
        visual = registry.tokenizer_for("visual", None)
        vocab = Vocabulary(
            registry.tasks.values(),
            visual.model_copy(update={"codebook_bits": args.visual_bits}),
            registry.tokenizer_for("audio", None),
        )
    model, config, vocab = build_model(args, vocab)
    model.train()
    params = model.num_parameters()
    tasks = args.tasks.split(",")
    batch = mixed_batch(registry, vocab, config.text_dim, torch.Generator().manual_seed(0), tasks)
    tokens = sum(e["tokens"].numel() for e in batch)
    parts = model_flops(config, batch)
    flops = sum(parts.values())
    shares = {k: v / flops for k, v in parts.items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, foreach=True)
    print(
        f"config {args.config}; batch: "
        + ", ".join(f"{n} L={e['tokens'].shape[1]}" for n, e in zip(tasks, batch, strict=True))
        + f"; {tokens} tokens, {flops / 1e12:.3f} model TFLOP per step: "
        + ", ".join(f"{k} {v:.1%}" for k, v in shares.items())
    )

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for example in batch:
            extra = {k: v for k, v in example.items() if k not in ("tokens", "prefix_length")}
            loss = model.loss(example["tokens"], example["prefix_length"], **extra)
            (loss / len(batch)).backward()
            total += float(loss.detach())
        optimizer.step()
        return total / len(batch)

    peak_before = matmul_peak(dtype)
    loss = step()  # warm-up
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - start)
        print(f"step: {times[-1]:.2f} s, loss {loss:.3f}")
    peak_after = matmul_peak(dtype)
    peak = max(peak_before, peak_after)
    seconds = statistics.median(times)
    achieved = flops / seconds / 1e9
    mfu = achieved / peak
    print(
        f"matmul peak {peak:.1f} GFLOP/s (before {peak_before:.1f}, after {peak_after:.1f}); "
        f"step {seconds:.2f} s (median of {len(times)}, {min(times):.2f} to {max(times):.2f}): "
        f"{tokens / seconds:.1f} tokens/s, {achieved:.1f} GFLOP/s, MFU {mfu:.2f} "
        f"with {torch.get_num_threads()} threads; the head is {shares['head']:.1%} of the FLOPs"
    )
    print(
        json.dumps(
            {
                "config": args.config,
                "load_average_1m": round(os.getloadavg()[0], 2),
                "tokens_per_s": round(tokens / seconds, 2),
                "mfu": round(mfu, 3),
                "threads": torch.get_num_threads(),
                "peak_gflops": round(peak, 1),
                "achieved_gflops": round(achieved, 1),
                "head_flops_share": round(shares["head"], 3),
                "flops_shares": {k: round(v, 3) for k, v in shares.items()},
                "dtype": str(dtype).removeprefix("torch."),
                "params": params,
                "vocab_size": config.vocab_size,
                "layers": config.n_layers,
                "d_model": config.d_model,
                "tokens_per_step": tokens,
                "step_s_median": round(seconds, 3),
                "step_s_all": [round(t, 3) for t in times],
            }
        )
    )


if __name__ == "__main__":
    main()
