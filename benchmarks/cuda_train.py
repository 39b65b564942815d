"""The prefix LM on a CUDA GPU: attention backends and bfloat16, side by side in one run.

Two measurements, each variant against the others on the same GPU in the same run:

``attention``
    one prefix-LM attention call, forward + backward, bfloat16, (1, heads 16, L, 64) with the
    prefix half the sequence, L from 1,024 to the paper's longest layout (10,381, stylize at
    41x224x128): milliseconds and peak memory per backend (``sdpa`` with its boolean mask,
    compiled ``flex``, ``xformers`` when its kernels run here).
``train step``
    one optimizer step of the real model (``model.loss``, backward, AdamW) over the
    ``train_step.py`` batch (one micro-batch per task, paper formats, real 266,496-id
    vocabulary), per preset, autocast dtype and backend: tokens/s, MFU against this GPU's
    bfloat16 (or TF32-off float32) matmul peak measured in the same run, peak memory.

Usage: ``python benchmarks/cuda_train.py [--presets small,300m] [--steps 10]``. Needs CUDA.
The last line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics

import torch
from train_step import mixed_batch, model_flops  # a sibling module of these scripts

from videopoet.core import attention
from videopoet.core.attention import attend
from videopoet.core.model import ModelConfig, PrefixLM
from videopoet.core.plugins import get_registry
from videopoet.core.training import to_device
from videopoet.core.vocabulary import Vocabulary

BACKENDS = ["sdpa", "flex"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def cuda_time(fn, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls, timed with CUDA events after one warm-up call."""
    fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        out.append(start.elapsed_time(end) / 1e3)
    return out


def matmul_peak(dtype: torch.dtype, size: int = 8192) -> float:
    """Best TFLOP/s of a large square matmul on this GPU (its practical peak)."""
    a = torch.randn(size, size, device="cuda", dtype=dtype)
    b = torch.randn(size, size, device="cuda", dtype=dtype)
    return 2 * size**3 / min(cuda_time(lambda: a @ b, 10)) / 1e12


def attention_once(length: int, backend: str) -> dict:
    """One backend's forward + backward at one length: median milliseconds and peak MiB."""
    g = torch.Generator(device="cuda").manual_seed(0)
    shape = (1, 16, length, 64)
    q, k, v, grad = (
        torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4)
    )
    q, k, v = (t.requires_grad_() for t in (q, k, v))

    def call():
        attend(q, k, v, length // 2, backend=backend).backward(grad)

    call()  # compile, if the backend compiles
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    seconds = statistics.median(cuda_time(call, 10))
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    return {"ms": round(seconds * 1e3, 3), "peak_mib": round(peak, 1)}


def bench_attention(lengths: list[int]) -> dict:
    figures: dict[str, dict] = {}
    for length in lengths:
        row = {backend: attention_once(length, backend) for backend in BACKENDS}
        line = ", ".join(f"{b} {r['ms']:.2f} ms {r['peak_mib']:.0f} MiB" for b, r in row.items())
        print(f"attention L={length:>6,}: {line}")
        figures[str(length)] = row
    return figures


def train_once(
    preset: str, vocab: Vocabulary, batch: list[dict], steps: int, dtype, backend: str
) -> tuple[float, float, float]:
    """Median step seconds, model FLOPs per step and peak MiB of one variant."""
    torch.manual_seed(0)
    config = ModelConfig.preset(
        preset, vocab_size=vocab.size, attention=backend, grid_positions=False
    )
    model = PrefixLM(config).cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    flops = sum(model_flops(config, batch).values())
    cuda_batch = to_device(batch, torch.device("cuda"))

    def step():
        optimizer.zero_grad(set_to_none=True)
        for example in cuda_batch:
            extra = {k: v for k, v in example.items() if k not in ("tokens", "prefix_length")}
            with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
                loss = model.loss(example["tokens"], example["prefix_length"], **extra)
            (loss / len(cuda_batch)).backward()
        optimizer.step()

    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    seconds = statistics.median(cuda_time(step, steps))
    peak_mib = torch.cuda.max_memory_allocated() / 2**20
    return seconds, flops, peak_mib


def bench_train(preset: str, vocab: Vocabulary, batch: list[dict], steps: int, peaks) -> dict:
    figures: dict[str, dict] = {}
    tokens = sum(e["tokens"].numel() for e in batch)
    for dtype_name, dtype in DTYPES.items():
        for backend in BACKENDS:
            seconds, flops, peak_mib = train_once(preset, vocab, batch, steps, dtype, backend)
            torch.cuda.empty_cache()  # the variant's model and optimizer are gone
            tflops = flops / seconds / 1e12
            key = f"{dtype_name}/{backend}"
            figures[key] = {
                "step_ms": round(seconds * 1e3, 2),
                "tokens_per_s": round(tokens / seconds),
                "tflops": round(tflops, 1),
                "mfu": round(tflops / peaks[dtype_name], 3),
                "peak_mib": round(peak_mib),
            }
            print(
                f"{preset} {key:<18} step {seconds * 1e3:7.1f} ms  {tokens / seconds:9,.0f} "
                f"tokens/s  {tflops:6.1f} TFLOP/s  MFU {tflops / peaks[dtype_name]:.2f}  "
                f"peak {peak_mib:,.0f} MiB"
            )
    base = figures["float32/sdpa"]["tokens_per_s"]
    for row in figures.values():
        row["vs_float32_sdpa"] = round(row["tokens_per_s"] / base, 2)
    return {"tokens_per_step": tokens, "variants": figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="small,300m")
    parser.add_argument("--tasks", default="t2v,v2a", help="one micro-batch per task")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--lengths", default="1024,2048,4096,10381")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA device")
    if importlib.util.find_spec("xformers") is not None:
        failure = attention._xformers_failure("cuda")
        if failure is None:
            BACKENDS.append("xformers")
        else:
            print(f"xformers is installed but its kernels do not run here: {failure}")
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 here
    name = torch.cuda.get_device_name()
    peaks = {k: matmul_peak(v) for k, v in DTYPES.items()}
    print(
        f"{name}; torch {torch.__version__}; backends {', '.join(BACKENDS)}; matmul peak "
        f"bfloat16 {peaks['bfloat16']:.0f} TFLOP/s, float32 {peaks['float32']:.0f} TFLOP/s"
    )
    attention_figures = bench_attention([int(x) for x in args.lengths.split(",")])
    registry = get_registry()
    vocab = Vocabulary.from_registry(registry)
    tasks = args.tasks.split(",")
    train = {}
    for preset in args.presets.split(","):
        text_dim = ModelConfig.preset(preset, vocab_size=vocab.size).text_dim
        batch = mixed_batch(registry, vocab, text_dim, torch.Generator().manual_seed(0), tasks)
        train[preset] = bench_train(preset, vocab, batch, args.steps, peaks)
    print(
        json.dumps(
            {
                "device": name,
                "torch": torch.__version__,
                "backends": BACKENDS,
                "matmul_peak_tflops": {k: round(v, 1) for k, v in peaks.items()},
                "tasks": tasks,
                "attention_fwd_bwd_bf16": attention_figures,
                "train_step": train,
            }
        )
    )


if __name__ == "__main__":
    main()
