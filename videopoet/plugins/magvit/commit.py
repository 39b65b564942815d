"""COMMIT encoding for the masked tasks (MAGVIT; VideoPoet 3.1): inpainting and outpainting.

The condition video is tokenized *with its pixel mask applied* (masked pixels replaced by a
fill value before the encoder sees them), the target from the full video, so no masked pixel
leaks into the condition tokens.

Masks are boolean ``(T, H, W)`` (or ``(B, T, H, W)``) tensors, ``True`` where a pixel is
hidden (to be generated). Which pixels a task hides is the task's business: the inpainting and
outpainting tasks draw and read their masks (``videopoet/tasks/masks.py``); this module only
applies a mask it is given.
"""

from __future__ import annotations

from typing import Any

import torch

from videopoet.core.errors import ConfigError


def apply_mask(video: torch.Tensor, mask: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """``video`` (B, C, T, H, W) with hidden pixels set to ``fill`` (0 = mid grey in [-1, 1])."""
    if video.ndim != 5:
        raise ConfigError("video.shape", tuple(video.shape), "(batch, 3, frames, H, W)")
    if mask.dtype != torch.bool:
        raise ConfigError("mask.dtype", str(mask.dtype), "torch.bool (True = hidden)")
    b, _, t, h, w = video.shape
    if mask.ndim == 3:
        mask = mask.unsqueeze(0)
    if mask.ndim != 4 or tuple(mask.shape[1:]) != (t, h, w) or mask.shape[0] not in (1, b):
        raise ConfigError(
            "mask.shape", tuple(mask.shape), f"({t}, {h}, {w}) or ({b}, {t}, {h}, {w})"
        )
    hidden = mask.to(video.device).unsqueeze(1)
    return video.masked_fill(hidden, fill)


def commit_encode(
    tokenizer: Any, video: torch.Tensor, mask: torch.Tensor, fill: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(condition ids from the masked video, target ids from the full video), each (B, N)."""
    condition = tokenizer.encode(apply_mask(video, mask, fill))
    target = tokenizer.encode(video)
    return condition, target


def latent_mask(mask: torch.Tensor, temporal: int = 4, spatial: int = 8) -> torch.Tensor:
    """Pixel mask (…, T, H, W) → latent mask (…, t, h, w): a token is hidden if any pixel of
    its causal receptive block (frame 0 alone, then 4-frame chunks; 8×8 patches) is hidden."""
    t, h, w = mask.shape[-3:]
    if (t - 1) % temporal or h % spatial or w % spatial:
        raise ConfigError(
            "mask.shape", tuple(mask.shape), f"1 + {temporal}k frames, sizes ×{spatial}"
        )
    lead = mask.shape[:-3]
    first = mask[..., :1, :, :]
    rest = mask[..., 1:, :, :].reshape(*lead, (t - 1) // temporal, temporal, h, w).any(-3)
    frames = torch.cat([first, rest], dim=-3)
    blocks = frames.reshape(*lead, frames.shape[-3], h // spatial, spatial, w // spatial, spatial)
    return blocks.any(-1).any(-2)
