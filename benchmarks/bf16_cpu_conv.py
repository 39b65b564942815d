"""Is bfloat16 autocast safe and faster for the video tokenizer's training on this CPU?

Two measurements side by side in one run:

1. For each 3D convolution shape of the tiny tokenizer (and a few wider ones), the gradients
   of one convolution under bfloat16 autocast (oneDNN, the kernels torch uses on x86) against
   float32: the share of non-finite weight-gradient entries and the relative error of the
   weight and input gradients; beside them the weight gradient of the tokenizer's own
   :class:`videopoet.plugins.magvit.bf16_conv.Conv3d` (float32 weight gradients). bfloat16
   itself costs about 0.3 % relative error; an error far above that, or a non-finite entry,
   is a wrong kernel.
2. One training step (forward + backward, reconstruction loss) of the committed tiny tokenizer
   on a batch of world clips, median seconds per step: float32, bfloat16 autocast as the
   tokenizer trains (float32 weight gradients), and bfloat16 with oneDNN's own weight
   gradients (faster, right only where part 1 shows no wrong shape).

The last line is one JSON object: per shape the figures, ``step_s_fp32``, ``step_s_bf16``,
``bf16_speedup``, ``step_s_bf16_onednn_weight_grad``, ``bf16_onednn_speedup`` and
``bf16_wrong_shapes`` (how many shapes gave oneDNN a wrong weight gradient).
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
    """bf16-autocast gradients of one padded 3x3x3 convolution against float32's: oneDNN's,
    and the tokenizer's ``Conv3d`` (float32 weight gradient) with the same weights."""
    from videopoet.plugins.magvit.bf16_conv import Conv3d

    conv = torch.nn.Conv3d(cin, cout, 3, padding=(0, 1, 1))
    ours = Conv3d(cin, cout, 3, padding=(0, 1, 1))
    ours.load_state_dict(conv.state_dict())
    x = torch.randn(batch, cin, frames, size, size)
    grads = {}
    for name, module, bf16 in (("fp32", conv, False), ("onednn", conv, True), ("ours", ours, True)):
        module.zero_grad()
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = module(xi)
        y.float().pow(2).mean().backward()
        grads[name] = (module.weight.grad.clone(), xi.grad.clone())
    (w32, x32), (w16, x16), (w_ours, _) = grads["fp32"], grads["onednn"], grads["ours"]
    return {
        "weight_nonfinite": (~torch.isfinite(w16)).float().mean().item(),
        "weight_rel_err": relative_error(w16, w32),
        "input_rel_err": relative_error(x16, x32),
        "ours_weight_rel_err": relative_error(w_ours, w32),
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
    from videopoet.plugins.magvit import bf16_conv

    ours = bf16_conv.cpu_bf16_training
    for name, bf16, onednn in (
        ("fp32", False, False),
        ("bf16", True, False),
        ("bf16_onednn_weight_grad", True, True),
    ):
        # oneDNN's weight gradient: the tokenizer's Conv3d told it is not bf16 training
        bf16_conv.cpu_bf16_training = (lambda x: False) if onednn else ours
        try:
            step(bf16)  # its own warm-up
            times, finite = [], True
            for _ in range(repeats):
                start = time.perf_counter()
                finite &= step(bf16)
                times.append(time.perf_counter() - start)
        finally:
            bf16_conv.cpu_bf16_training = ours
        out[f"step_s_{name}"] = statistics.median(times)
        out[f"grads_finite_{name}"] = finite
    out["bf16_speedup"] = out["step_s_fp32"] / out["step_s_bf16"]
    out["bf16_onednn_speedup"] = out["step_s_fp32"] / out["step_s_bf16_onednn_weight_grad"]
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
    header = ("conv (cin->cout, t, hxw)", "non-finite dW", "dW rel.err", "dX rel.err", "ours dW")
    print(f"{header[0]:28} {header[1]:>14} {header[2]:>11} {header[3]:>11} {header[4]:>8}")
    for cin, cout, frames, size in SHAPES:
        r = check_conv(cin, cout, frames, size, args.batch)
        bad = r["weight_nonfinite"] > 0 or not r["weight_rel_err"] <= WRONG_ABOVE
        wrong += bad
        key = f"{cin}->{cout} t{frames} {size}x{size}"
        shapes[key] = r
        print(
            f"{key:28} {r['weight_nonfinite']:14.3f} {r['weight_rel_err']:11.4f} "
            f"{r['input_rel_err']:11.4f} {r['ours_weight_rel_err']:8.4f}"
            f"{'  WRONG' if bad else ''}"
        )
    figures["shapes"] = shapes
    figures["bf16_wrong_shapes"] = wrong
    step = time_tokenizer_step(Path(args.tokenizer), args.step_batch, args.frames, args.repeats)
    print(
        f"tokenizer training step, {args.step_batch} clips of {args.frames}x64x64: "
        f"float32 {step['step_s_fp32']:.3f} s, bfloat16 autocast {step['step_s_bf16']:.3f} s "
        f"({step['bf16_speedup']:.2f}x; float32 weight gradients), with oneDNN's weight "
        f"gradients {step['step_s_bf16_onednn_weight_grad']:.3f} s "
        f"({step['bf16_onednn_speedup']:.2f}x)"
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
