"""COMMIT encoding for the masked tasks (MAGVIT; VideoPoet 3.1): inpainting and outpainting.

The condition video is tokenized *with its pixel mask applied* (masked pixels replaced by a
fill value before the encoder sees them), the target from the full video, so no masked pixel
leaks into the condition tokens.

Masks are boolean ``(T, H, W)`` (or ``(B, T, H, W)``) tensors, ``True`` where a pixel is
hidden (to be generated). :func:`centre_mask` hides a centred box (inpainting),
:func:`border_mask` hides everything outside it (outpainting); both take the box as a
fraction of the height and width (``0.5``: the middle half of each side, MAGVIT's central
tasks).
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from videopoet.core.errors import ConfigError

MaskKind = Literal["inpaint", "outpaint"]


def _box(height: int, width: int, fraction: float | tuple[float, float]) -> tuple[slice, slice]:
    fh, fw = (fraction, fraction) if isinstance(fraction, int | float) else fraction
    for name, f in (("fraction.height", fh), ("fraction.width", fw)):
        if not 0 < f < 1:
            raise ConfigError(name, f, "a fraction strictly between 0 and 1")
    bh, bw = max(1, round(height * fh)), max(1, round(width * fw))
    top, left = (height - bh) // 2, (width - bw) // 2
    return slice(top, top + bh), slice(left, left + bw)


def centre_mask(
    frames: int, height: int, width: int, fraction: float | tuple[float, float] = 0.5
) -> torch.Tensor:
    """Inpainting mask: ``True`` inside the centred box (hidden), ``False`` around it."""
    mask = torch.zeros(frames, height, width, dtype=torch.bool)
    rows, cols = _box(height, width, fraction)
    mask[:, rows, cols] = True
    return mask


def border_mask(
    frames: int, height: int, width: int, fraction: float | tuple[float, float] = 0.5
) -> torch.Tensor:
    """Outpainting mask: ``True`` outside the centred box (hidden), ``False`` inside it."""
    return ~centre_mask(frames, height, width, fraction)


def task_mask(
    kind: MaskKind, frames: int, height: int, width: int, fraction: float = 0.5
) -> torch.Tensor:
    """The mask of a masked task by name: ``inpaint`` (centre) or ``outpaint`` (border)."""
    if kind == "inpaint":
        return centre_mask(frames, height, width, fraction)
    if kind == "outpaint":
        return border_mask(frames, height, width, fraction)
    raise ConfigError("mask", kind, "'inpaint' or 'outpaint'")


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
