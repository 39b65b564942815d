"""Training throughput and model FLOPs utilisation (MFU) of the prefix LM on this machine.

One optimizer step over a mixed batch, one micro-batch per task as AGD batches them (a batch
shares one task and one length): by default text-to-video (64 text slots of which 40 used,
1,280 visual targets) and video-to-audio (1,280 visual inputs, 424 audio targets); ``--tasks``
adds e.g. ``i2v``. Paper formats, the real 266,496-id vocabulary, float32,
gradients accumulated over the micro-batches, then AdamW.

MFU = model FLOPs per second / this machine's float32 matmul peak, measured in the same run
(the best of several large ``torch.matmul`` calls). Model FLOPs (PaLM's convention, appendix B):
``6 · N · tokens`` for the transformer's weight matrices, ``6 · N_head · scored tokens`` for the
output head (it runs only on target positions), ``6 · N_text · text slots`` for the text
projection, and ``12 · layers · d_model · L²`` per sequence for attention scores and values.
Embedding look-ups count as zero. Usage: ``python benchmarks/train_step.py [--layers 4]``.
The last line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _lm_setup import add_model_args, build_model  # a sibling module of these scripts

from videopoet.core.declarations import Format
from videopoet.core.model import ModelConfig
from videopoet.core.plugins import get_registry
from videopoet.sequences.layout import build_layout


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


def model_flops(config: ModelConfig, batch: list[dict]) -> float:
    d, f, n = config.d_model, config.hidden_dim, config.n_layers
    body = n * (4 * d * d + 3 * d * f)
    total = 0.0
    for example in batch:
        length = example["tokens"].shape[1]
        scored = length - example["prefix_length"]
        slots = example["text_embeddings"].shape[1] if "text_embeddings" in example else 0
        total += 6 * body * length + 6 * d * config.vocab_size * scored
        total += 6 * config.text_dim * d * slots + 12 * n * d * length**2
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser, layers=4, width=256, heads=4)
    parser.add_argument("--tasks", default="t2v,v2a", help="one micro-batch per task")
    parser.add_argument("--steps", type=int, default=1, help="timed steps after one warm-up")
    args = parser.parse_args()
    dtype = torch.float32
    model, config, vocab = build_model(args)
    model.train()
    registry = get_registry()
    params = model.num_parameters()
    tasks = args.tasks.split(",")
    batch = mixed_batch(registry, vocab, config.text_dim, torch.Generator().manual_seed(0), tasks)
    tokens = sum(e["tokens"].numel() for e in batch)
    flops = model_flops(config, batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, foreach=True)
    print(
        "batch: "
        + ", ".join(f"{n} L={e['tokens'].shape[1]}" for n, e in zip(tasks, batch, strict=True))
        + f"; {tokens} tokens, {flops / 1e12:.2f} model TFLOP per step"
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
    seconds = min(times)
    achieved = flops / seconds / 1e9
    mfu = achieved / peak
    print(
        f"matmul peak {peak:.1f} GFLOP/s (before {peak_before:.1f}, after {peak_after:.1f}); "
        f"step {seconds:.2f} s (best of {len(times)}): {tokens / seconds:.1f} tokens/s, "
        f"{achieved:.1f} GFLOP/s, MFU {mfu:.2f} (goal >= 0.4)"
    )
    print(
        json.dumps(
            {
                "tokens_per_s": round(tokens / seconds, 2),
                "mfu": round(mfu, 3),
                "peak_gflops": round(peak, 1),
                "achieved_gflops": round(achieved, 1),
                "dtype": str(dtype).removeprefix("torch."),
                "params": params,
                "tokens_per_step": tokens,
                "step_s": round(seconds, 3),
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
