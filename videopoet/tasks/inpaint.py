"""Inpainting: a COMMIT-encoded clip with a box hidden conditions the full clip (paper 4.1).

Training draws boxes of varied size and place; a user gives the mask as an image file (white
= hidden), a tensor, or a box ``top,left,height,width`` in pixels. The output keeps the given
pixels outside the box (``Task.to_media``).
"""

from __future__ import annotations

import random
from typing import Any

import torch

from videopoet.core.declarations import Format, PrefixSpec, TargetSpec, TaskSpec
from videopoet.tasks.base import InputInfo, Task
from videopoet.tasks.masks import box_mask, read_user_mask

INPAINT = TaskSpec(
    name="inpaint",
    description="video inpainting of a masked region (text optional)",
    task_token="inpaint",
    prefix=PrefixSpec(text=True, visual="masked_video", optional=("text",)),
    target=TargetSpec(visual="video"),
)


class Inpaint(Task):
    spec = INPAINT

    def extra_inputs(self) -> list[InputInfo]:
        return [InputInfo("mask", "mask", False, "image file (white = hidden), tensor or box")]

    def draw_mask(self, fmt: Format, frames: int, rng: random.Random) -> torch.Tensor:
        """A box covering 10-60 % of each side, anywhere in the frame, on every frame."""
        h = max(1, round(fmt.height * rng.uniform(0.1, 0.6)))
        w = max(1, round(fmt.width * rng.uniform(0.1, 0.6)))
        top, left = rng.randint(0, fmt.height - h), rng.randint(0, fmt.width - w)
        return box_mask(frames, fmt.height, fmt.width, (top, left, h, w))

    def user_mask(self, inputs: dict[str, Any], fmt: Format, frames: int) -> torch.Tensor:
        return read_user_mask(self.name, inputs["mask"], fmt, frames)


SPECS = [Inpaint]
