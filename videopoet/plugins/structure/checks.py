"""Input checks shared by the structure signals: every refusal is a ConfigError naming the field.

The signals feed the visual tokenizer, which expects the project's clip convention
(``(3, T, H, W)`` float in ``[-1, 1]``); a clip in ``[0, 255]`` or ``[0, 1]`` would give a
structure clip that looks plausible and is wrong, so such inputs are refused, not rescaled.
"""

from __future__ import annotations

import torch

from videopoet.core.errors import ConfigError

#: how far past the nominal range a value may stray (float rounding, a decoder's overshoot)
#: before it is an error; values within it are clamped
RANGE_TOLERANCE = 1e-3
#: DIS matches 8x8 patches: OpenCV refuses frames smaller than 8 pixels on a side, or with
#: neither side reaching 12
MIN_SIDE, MIN_LONG_SIDE = 8, 12


def check_video(video: object, field: str = "video") -> torch.Tensor:
    """``video`` as float32 ``(3, T, H, W)`` in ``[-1, 1]`` (clamped within the tolerance)."""
    if not isinstance(video, torch.Tensor):
        raise ConfigError(field, type(video).__name__, "a torch.Tensor (3, T, H, W) in [-1, 1]")
    if not video.is_floating_point():
        raise ConfigError(f"{field}.dtype", str(video.dtype), "a floating-point tensor in [-1, 1]")
    shape = tuple(video.shape)
    if video.ndim != 4 or shape[0] != 3 or shape[1] < 1:
        raise ConfigError(f"{field}.shape", shape, "(3, T, H, W) with T >= 1 (RGB channels first)")
    height, width = shape[2], shape[3]
    if min(height, width) < MIN_SIDE or max(height, width) < MIN_LONG_SIDE:
        raise ConfigError(
            f"{field}.shape",
            shape,
            f"H, W >= {MIN_SIDE} and max(H, W) >= {MIN_LONG_SIDE} (the flow estimator's patches)",
        )
    _check_range(video, f"{field}.range", -1.0, 1.0)
    return video.float().clamp(-1, 1)


def check_map(values: object, field: str, frames: int, height: int, width: int) -> torch.Tensor:
    """A per-frame map (depth) as float32 ``(T, H, W)`` in ``[0, 1]`` matching the clip."""
    expected = (frames, height, width)
    if not isinstance(values, torch.Tensor):
        raise ConfigError(field, type(values).__name__, f"a torch.Tensor {expected} in [0, 1]")
    if not values.is_floating_point():
        raise ConfigError(f"{field}.dtype", str(values.dtype), "a floating-point tensor in [0, 1]")
    if tuple(values.shape) != expected:
        raise ConfigError(
            f"{field}.shape", tuple(values.shape), f"{expected} (T, H, W) of the clip"
        )
    _check_range(values, f"{field}.range", 0.0, 1.0)
    return values.float().clamp(0, 1)


def _check_range(values: torch.Tensor, field: str, low: float, high: float) -> None:
    if values.numel() == 0:
        return
    if not bool(torch.isfinite(values).all()):
        raise ConfigError(field, "non-finite values", f"finite values in [{low:g}, {high:g}]")
    lo, hi = float(values.min()), float(values.max())
    if lo < low - RANGE_TOLERANCE or hi > high + RANGE_TOLERANCE:
        raise ConfigError(field, f"[{lo:.4g}, {hi:.4g}]", f"values in [{low:g}, {high:g}]")
