"""Masks of the masked tasks (inpainting, outpainting): (T, H, W) bool, True = hidden.

They live with the tasks that use them; the video tokenizer only applies a mask it is given
(COMMIT encoding, ``videopoet.plugins.magvit.commit``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from videopoet.core.declarations import Format
from videopoet.tasks.base import InputError


def box_mask(frames: int, height: int, width: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    """Hide the box ``(top, left, box_height, box_width)`` in pixels on every frame."""
    top, left, h, w = box
    mask = torch.zeros(frames, height, width, dtype=torch.bool)
    mask[:, top : top + h, left : left + w] = True
    return mask


def border_mask(
    frames: int, height: int, width: int, direction: str, amount: float
) -> torch.Tensor:
    """Hide ``amount`` of the frame at one side, or split over both sides of an axis."""
    mask = torch.zeros(frames, height, width, dtype=torch.bool)
    rows, cols = max(1, round(height * amount)), max(1, round(width * amount))
    if direction == "left":
        mask[..., :cols] = True
    elif direction == "right":
        mask[..., width - cols :] = True
    elif direction == "top":
        mask[:, :rows] = True
    elif direction == "bottom":
        mask[:, height - rows :] = True
    elif direction == "horizontal":
        half = max(1, cols // 2)
        mask[..., :half] = True
        mask[..., width - half :] = True
    elif direction == "vertical":
        half = max(1, rows // 2)
        mask[:, :half] = True
        mask[:, height - half :] = True
    else:
        raise ValueError(f"unknown direction {direction!r}")
    return mask


def read_user_mask(task: str, value: Any, fmt: Format, frames: int) -> torch.Tensor:
    """A mask from an image file (non-black = hidden), a bool/0-1 tensor (H, W) or (T, H, W),
    or a box ``"top,left,height,width"`` (pixels) as a string or a 4-tuple."""
    size = (fmt.height, fmt.width)
    typed = value
    if isinstance(value, str) and not Path(value).exists() and value.count(",") == 3:
        value = tuple(value.split(","))
    if isinstance(value, tuple | list):
        try:
            top, left, h, w = (int(v) for v in value)
        except (TypeError, ValueError):
            raise InputError(
                task, "mask", str(typed), "a box top,left,height,width in pixels"
            ) from None
        if h < 1 or w < 1 or top < 0 or left < 0 or top + h > fmt.height or left + w > fmt.width:
            raise InputError(
                task, "mask", str(typed), f"a box inside the {fmt.height}x{fmt.width} frame"
            )
        return box_mask(frames, fmt.height, fmt.width, (top, left, h, w))
    if isinstance(value, str | Path):
        from videopoet.data.media import MediaError, read_frames

        if not Path(value).is_file():
            raise InputError(task, "mask", str(value), "an existing image file or a box")
        try:
            pixels = read_frames(value, frames=1)
        except MediaError as exc:
            raise InputError(task, "mask", str(value), f"a readable image ({exc})") from exc
        value = pixels[0].amax(-1) > 127
    if not isinstance(value, torch.Tensor):
        raise InputError(task, "mask", value, "an image file, a tensor or a box")
    mask = value.bool() if value.dtype == torch.bool else value > 0.5
    if mask.dim() == 2:
        mask = mask.expand(frames, -1, -1)
    if mask.dim() != 3 or tuple(mask.shape[1:]) != size or mask.shape[0] not in (frames,):
        raise InputError(
            task,
            "mask",
            value,
            f"a {fmt.height}x{fmt.width} mask (the format's size), as (H, W) or ({frames}, H, W)",
        )
    if not mask.any():
        raise InputError(task, "mask", value, "at least one hidden pixel")
    return mask.clone()
