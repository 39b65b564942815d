"""Render a grid of frames of a few world samples to docs/images/world.png.

Rows are samples (their caption is printed), columns frames 0, 4, 8, 12, 16 of a 17x64x64 clip,
upscaled x3 with nearest neighbour::

    python scripts/world-figure.py [--out docs/images/world.png] [--indices 0 2 4 5 11 13]
"""

from __future__ import annotations

import argparse

import torch

from videopoet.data import world
from videopoet.data.media import tensor_to_frames, write_png

GAP = 4  # pixels between cells (white)


def grid(indices: list[int], columns: list[int], scale: int = 3) -> torch.Tensor:
    """(H, W, 3) uint8: one row per sample, one column per frame."""
    rows = []
    for index in indices:
        item = world.sample(index, 17, 64, 64)
        print(f"{index:>3}  {item.motion:<9}  {item.caption}")
        frames = tensor_to_frames(item.video)[columns]  # (C, 64, 64, 3)
        frames = frames.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
        cells = [torch.nn.functional.pad(f, (0, 0, 0, GAP, 0, GAP), value=255) for f in frames]
        rows.append(torch.cat(cells, 1))
    return torch.cat(rows, 0)[:-GAP, :-GAP].contiguous()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images/world.png")
    parser.add_argument("--indices", type=int, nargs="+", default=[0, 2, 4, 5, 11, 13])
    args = parser.parse_args()
    torch.set_num_threads(1)
    image = grid(args.indices, [0, 4, 8, 12, 16])
    write_png(args.out, image)
    print(f"wrote {args.out} ({image.shape[1]}x{image.shape[0]})")


if __name__ == "__main__":
    main()
