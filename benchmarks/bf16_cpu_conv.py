"""Is bfloat16 autocast safe and faster for the video tokenizer's training on this CPU?

Two measurements side by side in one run:

1. For each 3D convolution shape of the tiny tokenizer (and a few wider ones), the gradients
   of one convolution under bfloat16 autocast (oneDNN, the kernels torch uses on x86) against
   float32: the share of non-finite weight-gradient entries and the relative error of the
   weight and input gradients. bfloat16 itself costs about 0.3 % relative error; an error
   far above that, or a non-finite entry, is a wrong kernel.
2. One training step (forward + backward, reconstruction loss) of the committed tiny tokenizer
   on a batch of world clips: float32 against bfloat16 autocast, median seconds per step.

The last line is one JSON object: per shape the figures, ``step_s_fp32``, ``step_s_bf16``,
``bf16_speedup`` and ``bf16_wrong_shapes`` (how many shapes gave a wrong weight gradient).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

#: (in channels, out channels, frames, height = width) of a convolution's input; the tiny
#: tokenizer's decoder runs 32 -> 256 at 5 latent frames of 32 x 32 (its last upsampling)
SHAPES = [
    (16, 128, 5, 32),
    (32, 128, 5, 32),
    (32, 256, 5, 32),
    (32, 256, 3, 16),
    (32, 256, 9, 64),
    (64, 256, 5, 32),
    (64, 512, 5, 32),
]
#: bfloat16 keeps 8 bits of mantissa: a correct kernel stays near 0.3 % relative error
WRONG_ABOVE = 0.02


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    if not torch.isfinite(got).all():
        return float("nan")
    return ((got - want).norm() / want.norm()).item()


def check_conv(cin: int, cout: int, frames: int, size: int, batch: int) -> dict[str, float]:
    """bf16-autocast gradients of one padded 3x3x3 convolution against float32's."""
    conv = torch.nn.Conv3d(cin, cout, 3, padding=(0, 1, 1))
    x = torch.randn(batch, cin, frames, size, size)
    grads = {}
    for bf16 in (False, True):
        conv.zero_grad()
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = conv(xi)
        y.float().pow(2).mean().backward()
        grads[bf16] = (conv.weight.grad.clone(), xi.grad.clone())
    (w32, x32), (w16, x16) = grads[False], grads[True]
    return {
        "weight_nonfinite": (~torch.isfinite(w16)).float().mean().item(),
        "weight_rel_err": relative_error(w16, w32),
        "input_rel_err": relative_error(x16, x32),
    }


def time_tokenizer_step(bundle: Path, batch: int, frames: int, repeats: int) -> dict[str, float]:
    from videopoet.data import world
    from videopoet.plugins.magvit.model import MagvitTokenizer

    tokenizer = MagvitTokenizer.from_pretrained(bundle).train()
    video = world.make_batch(list(range(batch)), frames, 64, 64)

    def step(bf16: bool) -> bool:
        tokenizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            recon, _ = tokenizer(video)
            loss = (recon.float() - video).pow(2).mean()
        loss.backward()
        return all(
            torch.isfinite(p.grad).all() for p in tokenizer.parameters() if p.grad is not None
        )

    out: dict[str, object] = {}
    grads = {}
    for bf16 in (False, True):  # also the warm-up: oneDNN picks and caches its kernels
        step(bf16)
        grads[bf16] = {
            n: p.grad.clone() for n, p in tokenizer.named_parameters() if p.grad is not None
        }
    errors = {n: relative_error(grads[True][n], g) for n, g in grads[False].items() if g.norm() > 0}
    worst = max(errors, key=lambda n: math.inf if math.isnan(errors[n]) else errors[n])
    out["step_worst_grad"], out["step_worst_grad_rel_err"] = worst, errors[worst]
    finite_errors = [v for v in errors.values() if not math.isnan(v)]
    out["step_median_grad_rel_err"] = statistics.median(finite_errors)
    for name, bf16 in (("fp32", False), ("bf16", True)):
        times, finite = [], True
        for _ in range(repeats):
            start = time.perf_counter()
            finite &= step(bf16)
            times.append(time.perf_counter() - start)
        out[f"step_s_{name}"] = statistics.median(times)
        out[f"grads_finite_{name}"] = finite
    out["bf16_speedup"] = out["step_s_fp32"] / out["step_s_bf16"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--batch", type=int, default=2, help="clips per convolution check")
    parser.add_argument("--tokenizer", default=str(ROOT / "checkpoints/magvit2_tiny_world"))
    parser.add_argument("--step-batch", type=int, default=4, help="clips per training step")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per dtype")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    figures: dict[str, object] = {"threads": args.threads, "torch": torch.__version__}
    shapes, wrong = {}, 0
    header = ("conv (cin->cout, t, hxw)", "non-finite dW", "dW rel.err", "dX rel.err")
    print(f"{header[0]:28} {header[1]:>14} {header[2]:>11} {header[3]:>11}")
    for cin, cout, frames, size in SHAPES:
        r = check_conv(cin, cout, frames, size, args.batch)
        bad = r["weight_nonfinite"] > 0 or not r["weight_rel_err"] <= WRONG_ABOVE
        wrong += bad
        key = f"{cin}->{cout} t{frames} {size}x{size}"
        shapes[key] = r
        print(
            f"{key:28} {r['weight_nonfinite']:14.3f} {r['weight_rel_err']:11.4f} "
            f"{r['input_rel_err']:11.4f}{'  WRONG' if bad else ''}"
        )
    figures["shapes"] = shapes
    figures["bf16_wrong_shapes"] = wrong
    step = time_tokenizer_step(Path(args.tokenizer), args.step_batch, args.frames, args.repeats)
    print(
        f"tokenizer training step, {args.step_batch} clips of {args.frames}x64x64: "
        f"float32 {step['step_s_fp32']:.3f} s, bfloat16 autocast {step['step_s_bf16']:.3f} s "
        f"({step['bf16_speedup']:.2f}x)"
    )
    print(
        f"its gradients, bfloat16 against float32: median relative error "
        f"{step['step_median_grad_rel_err']:.4f}, worst {step['step_worst_grad_rel_err']:.4f} "
        f"({step['step_worst_grad']})"
    )
    figures |= step
    figures["load_avg_1min"] = os.getloadavg()[0]
    print(json.dumps(finite_or_none(figures)))


def finite_or_none(node: object) -> object:
    """NaN as null, so the last line is strict JSON."""
    if isinstance(node, dict):
        return {k: finite_or_none(v) for k, v in node.items()}
    if isinstance(node, float) and math.isnan(node):
        return None
    return node


if __name__ == "__main__":
    main()
