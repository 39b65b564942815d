"""Peak memory and time of one super-resolution forward pass: windowed vs full attention.

    python benchmarks/superres_memory.py [--width 32] [--heads 2] [--blocks 1] [--budget-gb 4]
                                         [--max-tokens 35840]

The token grid grows from (5, 16, 8) (640 tokens) to the paper's stage-two grid (5, 112, 64)
(35,840 tokens, 17x896x512 pixels); at each size one forward of the same random-weight stage
(width ``--width``, one block of three layers by default, the low-resolution grid a quarter of
it) runs in three variants, side by side in this one run:

``windowed``
    the paper's multi-axis windows, stage two's shapes (1, 112, 2), (1, 4, 64), (5, 8, 8),
    each clipped to the grid while the grid is smaller; cross-attention to the low-resolution
    tokens in the half-size windows.
``full_fused``
    every window the whole grid (self-attention over all tokens, cross-attention over all
    low-resolution tokens) through PyTorch's fused SDPA kernel, which never stores the score
    matrix: memory stays low, time grows with the square of the tokens.
``full_materialized``
    the same full attention through SDPA's math backend, which materializes the
    ``heads x L x L`` scores and their softmax: the quadratic memory the paper's windows avoid.

Memory is what the forward itself adds (the growth of the resident set above its level before
the pass, sampled every millisecond; the CUDA allocator's peak on a GPU), measured with
``PeakGrowth`` from ``benchmarks/tokenizer.py``. The process's address space is capped at its
size after start-up plus ``--budget-gb``, so a variant that needs more gets an allocation error
here ("does not fit") instead of pushing a shared machine into swap or the OOM killer; it is not
run at larger sizes. Growth is the least-squares slope of log(figure) against log(tokens)
over the sizes a variant completed from 2,560 tokens on (1: linear, 2: quadratic). The last line
printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tokenizer import PeakGrowth  # noqa: E402 - the sibling benchmark's memory meter

GRIDS = [(5, 16, 8), (5, 16, 16), (5, 32, 16), (5, 32, 32), (5, 56, 32), (5, 112, 32), (5, 112, 64)]
STAGE_TWO = {"vertical": (1, 112, 2), "horizontal": (1, 4, 64), "temporal": (5, 8, 8)}
VARIANTS = ("windowed", "full_fused", "full_materialized")


def _address_space() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _slope(points: list[tuple[int, float]]) -> float | None:
    points = [(n, v) for n, v in points if n >= 2560 and v > 0]
    if len(points) < 2:
        return None
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(v) for _, v in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--budget-gb", type=float, default=4.0, help="address space for the work")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-tokens", type=int, default=35_840, help="stop at this grid size")
    args = parser.parse_args(argv)

    from torch.nn.attention import SDPBackend, sdpa_kernel

    from videopoet.core.training import resolve_device
    from videopoet.plugins.superres.config import StageConfig
    from videopoet.plugins.superres.model import SuperResTransformer

    device = resolve_device(args.device)
    largest = GRIDS[-1]
    common = {
        "grid": largest,
        "codebook_bits": 10,
        "width": args.width,
        "heads": args.heads,
        "blocks": args.blocks,
        "text_dim": 16,
    }
    torch.manual_seed(0)
    windowed = SuperResTransformer(StageConfig(windows=STAGE_TWO, **common)).to(device).eval()
    full_windows = dict.fromkeys(("vertical", "horizontal", "temporal"), largest)
    full = SuperResTransformer(StageConfig(windows=full_windows, **common)).to(device).eval()
    full.load_state_dict(windowed.state_dict())  # the same weights: only the windows differ
    if device.type == "cpu":
        limit = _address_space() + int(args.budget_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    print(
        f"stage of {windowed.num_parameters() / 1e6:.2f} M parameters (width {args.width}, "
        f"{3 * args.blocks} layers) on {device}, {torch.get_num_threads()} threads, "
        f"budget {args.budget_gb:g} GB",
        file=sys.stderr,
    )

    def forward(model: torch.nn.Module, grid: tuple[int, int, int]) -> None:
        n = math.prod(grid)
        hr = torch.randint(1024, (1, n), device=device)
        lr = torch.randint(1024, (1, n // 4), device=device)
        masked = torch.ones(1, n, dtype=torch.bool, device=device)
        model(hr, lr, hr_masked=masked, grid=grid)

    rows: list[dict] = []
    done = dict.fromkeys(VARIANTS, True)
    with torch.inference_mode():
        forward(windowed, GRIDS[0])  # warm-up: allocator, kernels
        forward(full, GRIDS[0])
        for grid in [g for g in GRIDS if math.prod(g) <= args.max_tokens]:
            tokens = math.prod(grid)
            row: dict = {"grid": list(grid), "tokens": tokens}
            for variant in VARIANTS:
                if not done[variant]:
                    row[variant] = None
                    continue
                model = windowed if variant == "windowed" else full
                backends = [SDPBackend.MATH] if variant == "full_materialized" else None
                try:
                    with PeakGrowth(device) as memory:
                        began = time.perf_counter()
                        if backends is None:
                            forward(model, grid)
                        else:
                            with sdpa_kernel(backends):
                                forward(model, grid)
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                        seconds = time.perf_counter() - began
                    row[variant] = {"peak_mb": round(memory.mb, 1), "seconds": round(seconds, 3)}
                except (RuntimeError, MemoryError) as exc:  # the allocation the budget refuses
                    done[variant] = False
                    row[variant] = None
                    row[f"{variant}_error"] = str(exc).splitlines()[0][:120]
                shown = row[variant] or "does not fit"
                print(f"{tokens:>6} tokens {variant:<18} {shown}", file=sys.stderr, flush=True)
            rows.append(row)

    def series(variant: str, key: str) -> list[tuple[int, float]]:
        return [(r["tokens"], r[variant][key]) for r in rows if r[variant] is not None]

    both = [r for r in rows if r["windowed"] is not None and r["full_materialized"] is not None]
    at = both[-1] if both else None
    fused = [r for r in rows if r["windowed"] is not None and r["full_fused"] is not None]
    at_fused = fused[-1] if fused else None
    result = {
        "benchmark": "superres_memory",
        "load_average_1m": round(os.getloadavg()[0], 2),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "width": args.width,
        "layers": 3 * args.blocks,
        "budget_gb": args.budget_gb,
        "windows": {k: list(v) for k, v in STAGE_TWO.items()},
        "rows": rows,
        "first_not_fitting_tokens": {
            v: next((r["tokens"] for r in rows if r[v] is None), None) for v in VARIANTS
        },
        "largest_both_tokens": at["tokens"] if at else None,
        "materialized_over_windowed_memory": (
            round(at["full_materialized"]["peak_mb"] / max(at["windowed"]["peak_mb"], 0.1), 1)
            if at
            else None
        ),
        "materialized_over_windowed_time": (
            round(at["full_materialized"]["seconds"] / at["windowed"]["seconds"], 1) if at else None
        ),
        "largest_fused_tokens": at_fused["tokens"] if at_fused else None,
        "fused_over_windowed_time": (
            round(at_fused["full_fused"]["seconds"] / at_fused["windowed"]["seconds"], 1)
            if at_fused
            else None
        ),
        "growth_exponent": {
            v: {
                "memory": _round(_slope(series(v, "peak_mb"))),
                "time": _round(_slope(series(v, "seconds"))),
            }
            for v in VARIANTS
        },
    }
    print(json.dumps(result))
    return result


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


if __name__ == "__main__":
    main()
