"""How much of a masked condition the LM could copy, for each COMMIT fill.

For held-out world clips, the committed tiny visual tokenizer encodes the full clip (the
target) and the clip with a quarter of each frame hidden (the condition), the hidden pixels
replaced by each fill of :mod:`videopoet.core.commit_fill`. Printed: the share of *visible*
latent cells (no hidden pixel in their receptive block) whose condition id equals the target
id, and the mean number of differing code bits there, for a centre box (inpainting) and a
border (outpainting, the six directions in turn). The last line is one JSON object.

    python benchmarks/commit_fill.py [--clips 16] [--visual checkpoints/magvit2_tiny_world]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from videopoet.core.commit_fill import COMMIT_FILLS
from videopoet.core.engine import Engine
from videopoet.data.world import EVAL_OFFSET, sample
from videopoet.plugins.magvit.commit import latent_mask
from videopoet.tasks.masks import border_mask, box_mask

ROOT = Path(__file__).resolve().parents[1]
DIRECTIONS = ("left", "right", "top", "bottom", "horizontal", "vertical")


def masks(index: int, frames: int, size: int) -> dict[str, torch.Tensor]:
    quarter = size // 4
    return {
        "centre": box_mask(frames, size, size, (quarter, quarter, size // 2, size // 2)),
        "border": border_mask(frames, size, size, DIRECTIONS[index % len(DIRECTIONS)], 0.25),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--visual", default=str(ROOT / "checkpoints" / "magvit2_tiny_world"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    engine = Engine.create(preset="tiny", visual_dir=args.visual, formats=["17x64x64"])
    frames, size = 17, 64
    shape = engine.visual_spec.latent_shape(frames, size, size)
    bits = engine.visual_spec.codebook_bits
    same: dict[tuple[str, str], list[float]] = {}
    flipped: dict[tuple[str, str], list[float]] = {}
    for i in range(args.clips):
        clip = sample(EVAL_OFFSET + i, frames, size, size).video
        target = engine.encode_video(clip).view(shape)
        for kind, mask in masks(i, frames, size).items():
            visible = ~latent_mask(mask)
            for how in COMMIT_FILLS:
                engine.commit_fill = how
                condition = engine.encode_video(clip, mask).view(shape)
                xor = condition ^ target
                count = sum((xor >> b) & 1 for b in range(bits)).float()
                same.setdefault((kind, how), []).append(
                    float((condition == target)[visible].float().mean())
                )
                flipped.setdefault((kind, how), []).append(float(count[visible].mean()))
    figures: dict[str, float] = {}
    print(f"{args.clips} held-out clips, {frames}x{size}x{size}, a quarter of each frame hidden")
    print(f"{'mask':8} {'fill':6} {'visible ids kept':>17} {'bits changed':>13}")
    for (kind, how), values in same.items():
        kept = sum(values) / len(values)
        changed = sum(flipped[(kind, how)]) / len(values)
        print(f"{kind:8} {how:6} {kept:17.3f} {changed:13.2f}")
        figures[f"{kind}_{how}_kept"] = round(kept, 4)
        figures[f"{kind}_{how}_bits_changed"] = round(changed, 3)
    print(json.dumps({"clips": args.clips, **figures}))


if __name__ == "__main__":
    main()
