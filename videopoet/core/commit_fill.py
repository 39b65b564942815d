"""What the hidden pixels of a COMMIT-encoded condition become (inpainting, outpainting).

COMMIT encoding (paper 3.1) tokenizes the condition clip with its mask applied, so nothing
hidden leaks into the prefix. *What* the hidden pixels are set to matters more than it looks:
the visual tokenizer normalizes each frame as a whole (GroupNorm over the frame), so a flat
mid-grey box shifts every token of the frame, also far from the box. Measured with the
committed tiny tokenizer on 16 held-out world clips (the share of *visible* latent cells whose
condition id equals the full clip's id; ``python benchmarks/commit_fill.py``):

====================  =======  ==========  =======
fill                  grey     mean        telea
====================  =======  ==========  =======
centre box (1/4)      0.28     0.72        0.81
border (1/4)          0.42     0.92        0.95
====================  =======  ==========  =======

With grey, the LM cannot copy the visible region (the ids differ) and learned to ignore the
condition; with a fill made from the visible pixels the visible ids mostly equal the target's,
which the LM copies as it copies frame prediction's given frames.

Fills (each uses only the visible pixels of the same frame, so it is leak-free and causal):

- ``grey``: 0 (mid grey in [-1, 1]); what bundles made before ``commit_fill`` existed use.
- ``mean``: each frame's mean visible colour.
- ``telea``: OpenCV's Telea inpainting of each frame (smooth continuation of the borders).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from videopoet.core.errors import ConfigError

CommitFill = Literal["grey", "mean", "telea"]
COMMIT_FILLS: tuple[str, ...] = ("grey", "mean", "telea")
#: what a bundle without a ``commit_fill`` entry was trained with
LEGACY_FILL = "grey"
#: what new bundles use
DEFAULT_FILL = "telea"
_TELEA_RADIUS = 3


def fill_hidden(video: torch.Tensor, mask: torch.Tensor, how: str = DEFAULT_FILL) -> torch.Tensor:
    """``video`` (B, 3, T, H, W) in [-1, 1] with the pixels that ``mask`` ((T, H, W) or
    (B, T, H, W), True = hidden) hides replaced by the ``how`` fill; visible pixels are
    returned unchanged."""
    if how not in COMMIT_FILLS:
        raise ConfigError("commit_fill", how, f"one of {', '.join(COMMIT_FILLS)}")
    if video.ndim != 5 or video.shape[1] != 3:
        raise ConfigError("video.shape", tuple(video.shape), "(batch, 3, frames, H, W)")
    b, _, t, h, w = video.shape
    mask = mask.to(video.device)
    if mask.ndim == 3:
        mask = mask.unsqueeze(0)
    if mask.ndim != 4 or tuple(mask.shape[1:]) != (t, h, w) or mask.shape[0] not in (1, b):
        raise ConfigError(
            "mask.shape", tuple(mask.shape), f"({t}, {h}, {w}) or ({b}, {t}, {h}, {w})"
        )
    if mask.dtype != torch.bool:
        raise ConfigError("mask.dtype", str(mask.dtype), "torch.bool (True = hidden)")
    mask = mask.expand(b, -1, -1, -1)
    hidden = mask.unsqueeze(1)
    if how == "grey":
        return video.masked_fill(hidden, 0.0)
    if how == "mean":
        visible = (~hidden).to(video.dtype)
        count = visible.sum(dim=(-2, -1), keepdim=True).clamp_min(1.0)
        mean = (video * visible).sum(dim=(-2, -1), keepdim=True) / count
        return torch.where(hidden, mean.expand_as(video), video)
    return torch.where(hidden, _telea(video, mask), video)


def _telea(video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    import cv2

    pixels = ((video.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255)
    frames = pixels.to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()  # B, T, H, W, 3
    holes = mask.cpu().numpy().astype(np.uint8)
    out = np.empty_like(frames)
    for i in range(frames.shape[0]):
        for j in range(frames.shape[1]):
            if holes[i, j].all():  # nothing visible to continue from: mid grey
                out[i, j] = 128
            elif holes[i, j].any():
                known = frames[i, j] * (1 - holes[i, j])[..., None]  # hidden values never read
                out[i, j] = cv2.inpaint(known, holes[i, j], _TELEA_RADIUS, cv2.INPAINT_TELEA)
            else:
                out[i, j] = frames[i, j]
    filled = torch.from_numpy(out).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
    return filled.to(device=video.device, dtype=video.dtype)
