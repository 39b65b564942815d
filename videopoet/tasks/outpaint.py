"""Outpainting: a COMMIT-encoded clip with a border hidden conditions the full clip (4.1).

The hidden border is on one side (``left``, ``right``, ``top``, ``bottom``) or on both sides of
an axis (``horizontal``, ``vertical``), ``amount`` of the frame in all (default 0.25). The
output keeps the given pixels outside the border (``Task.to_media``).
"""

from __future__ import annotations

import random
from typing import Any

import torch

from videopoet.core.declarations import Format, PrefixSpec, TargetSpec, TaskSpec
from videopoet.tasks.base import InputError, InputInfo, Task
from videopoet.tasks.masks import border_mask

OUTPAINT = TaskSpec(
    name="outpaint",
    description="video outpainting of a masked border (text optional)",
    task_token="outpaint",
    prefix=PrefixSpec(text=True, visual="masked_video", optional=("text",)),
    target=TargetSpec(visual="video"),
)

DIRECTIONS = ("left", "right", "top", "bottom", "horizontal", "vertical")


class Outpaint(Task):
    spec = OUTPAINT

    def extra_inputs(self) -> list[InputInfo]:
        return [
            InputInfo("direction", "choice", True, f"one of {', '.join(DIRECTIONS)}"),
            InputInfo("amount", "number", True, "fraction of the frame hidden, 0.25"),
        ]

    def draw_mask(self, fmt: Format, frames: int, rng: random.Random) -> torch.Tensor:
        return border_mask(
            frames, fmt.height, fmt.width, rng.choice(DIRECTIONS), rng.uniform(0.15, 0.5)
        )

    def user_mask(self, inputs: dict[str, Any], fmt: Format, frames: int) -> torch.Tensor:
        direction = inputs.get("direction", "horizontal")
        if direction not in DIRECTIONS:
            raise InputError(self.name, "direction", direction, f"one of {', '.join(DIRECTIONS)}")
        amount = inputs.get("amount", 0.25)
        try:
            amount = float(amount)
        except (TypeError, ValueError):
            amount = float("nan")
        if not 0 < amount < 1:
            raise InputError(self.name, "amount", inputs.get("amount"), "a fraction in (0, 1)")
        return border_mask(frames, fmt.height, fmt.width, direction, amount)


SPECS = [Outpaint]
