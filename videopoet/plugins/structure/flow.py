"""Optical flow of a clip with OpenCV's DIS estimator: offline, no weights, fast on a CPU.

DIS (Dense Inverse Search, Kroeger et al. 2016) matches 8x8 patches coarse to fine and needs
no trained network, so a user's video gets its flow with nothing downloaded. OpenCV's DIS
reads one 8-bit channel, and a grey conversion loses objects as bright as their background:
the world's blue on gray is one (sample 30: the flow of its grey frames, OpenCV's BT.601
weights, is 4.2 px off on the object with the ``medium`` preset, 1.9 px with Rec. 709's;
the colour flow below is 0.23 px off there and at worst 0.48 px on any moving clip of samples
0-119). So the flow is estimated on each of R, G and B, and every pixel takes the channel
with the most local contrast there (squared Sobel gradient, Gaussian-smoothed, summed over
both frames).

Presets, measured on the 107 moving clips among world samples 0-119 at 17x64x64 (``python
-m videopoet.plugins.structure.measure``; mean end-point error on the object's pixels, where
the zero flow scores 1.92 px): ``medium`` 0.12 px (worst clip 0.48), ``fast`` 0.19 px (0.61),
``ultrafast`` 0.29 px (0.96). ``medium`` is the default. Its price is some spurious motion on
flat background far from the object (0.27 px against 0.11 px for ``fast``): flat areas carry
no motion signal, and its half-resolution finest level spreads the object's. Every preset
takes about 0.1 s for a 17-frame clip at 64x64 or 128x128 on a busy 2-core CPU, so the
choice is about accuracy, not time. docs/structure.md has the figures.
"""

from __future__ import annotations

from types import ModuleType
from typing import Literal

import numpy as np
import torch

from videopoet.core.errors import ConfigError
from videopoet.plugins.structure.checks import check_video

FlowPreset = Literal["ultrafast", "fast", "medium"]
PRESETS: tuple[str, ...] = ("ultrafast", "fast", "medium")
#: sigma (pixels) of the smoothing of the per-channel contrast that picks a channel per pixel
CONTRAST_SIGMA = 3.0


def require_cv2() -> ModuleType:
    """OpenCV, or an ImportError that says which package to install (a dependency of
    videopoet, so this only fires in a broken environment)."""
    try:
        import cv2
    except ImportError as exc:
        raise ImportError(
            "optical flow needs OpenCV, a dependency of videopoet: "
            "pip install opencv-python-headless"
        ) from exc
    if not hasattr(cv2, "DISOpticalFlow_create"):
        raise ImportError(
            f"OpenCV {getattr(cv2, '__version__', '?')} has no DISOpticalFlow_create: "
            "pip install -U opencv-python-headless"
        )
    return cv2


def optical_flow(video: torch.Tensor, *, preset: FlowPreset = "medium") -> torch.Tensor:
    """Dense optical flow ``(T, 2, H, W)`` float32 in pixels, (dx, dy), on ``video``'s device.

    ``video`` is ``(3, T, H, W)`` float in ``[-1, 1]``. Frame ``t`` holds the motion from frame
    ``t`` to ``t + 1``; the last frame repeats the one before (a flow per frame, so the flow
    clip has as many frames as the video, as :func:`videopoet.data.world.structure_clip`);
    a 1-frame clip has zero flow.
    """
    if preset not in PRESETS:
        raise ConfigError("preset", preset, f"one of {list(PRESETS)}")
    cv2 = require_cv2()
    video = check_video(video)
    _, frames, height, width = video.shape
    flow = np.zeros((frames, 2, height, width), np.float32)
    if frames > 1:
        pixels = ((video.detach().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        pixels = np.ascontiguousarray(pixels.permute(1, 0, 2, 3).numpy())  # (T, 3, H, W)
        contrast = _contrast(cv2, pixels)
        dis = cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{preset.upper()}"))
        for t in range(frames - 1):
            per_channel = np.stack(
                [dis.calc(pixels[t, c], pixels[t + 1, c], None) for c in range(3)]
            )  # (3, H, W, 2)
            best = (contrast[t] + contrast[t + 1]).argmax(0)  # (H, W)
            chosen = np.take_along_axis(per_channel, best[None, :, :, None], 0)[0]
            flow[t] = chosen.transpose(2, 0, 1)
        flow[-1] = flow[-2]
    return torch.from_numpy(flow).to(video.device)


def _contrast(cv2: ModuleType, pixels: np.ndarray) -> np.ndarray:
    """Smoothed squared gradient magnitude of every channel of every frame: (T, 3, H, W)."""
    out = np.empty(pixels.shape, np.float32)
    for t in range(pixels.shape[0]):
        for c in range(3):
            plane = pixels[t, c].astype(np.float32) / 255.0
            gx = cv2.Sobel(plane, cv2.CV_32F, 1, 0, ksize=3)
            gy = cv2.Sobel(plane, cv2.CV_32F, 0, 1, ksize=3)
            out[t, c] = cv2.GaussianBlur(gx * gx + gy * gy, (0, 0), CONTRAST_SIGMA)
    return out
