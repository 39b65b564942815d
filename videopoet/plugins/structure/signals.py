"""The stylization task's structure clip: flow x, flow y and a third channel as one video.

Paper 4.1 conditions stylization on "optical flow, depth, and optionally the first frame",
given to the model as a 3-channel clip the visual tokenizer encodes like any other. Flow is
:func:`~videopoet.plugins.structure.flow.optical_flow` (DIS, no weights). The third channel
is, first found:

1. ``depth``: known depth (the world's ground truth, ``WorldSample.depth``);
2. ``depth_model``: a :class:`~videopoet.plugins.structure.depth.DepthEstimator`, e.g. one
   loaded by :func:`~videopoet.plugins.structure.depth.load_depth_model` from a local path;
3. the ``fallback``, a weights-free channel named for what it is: ``"luminance"`` (Rec. 709
   luma) or ``"edges"`` (Sobel magnitude of the luma). It is not depth and is never called
   so: :attr:`StructureClip.third_channel` records which one a clip holds.

Normalization to ``[-1, 1]`` (the same as :func:`videopoet.data.world.structure_clip`, so a
model trained on the world's ground truth reads a user's clip on the same scale): flow is
divided by ``flow_scale`` pixels (default 5 % of min(H, W): 3.2 px at 64x64, 6.4 px at
128x128) and clipped; depth ``d`` in ``[0, 1]`` becomes ``2 d - 1`` (near -1, far +1);
luminance ``Y`` in ``[0, 1]`` becomes ``2 Y - 1``; edge magnitude ``e`` becomes
``2 min(e / 4, 1) - 1`` (4 is a full black-to-white step under the 3x3 Sobel kernel, so flat
areas are -1 and such a step is +1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from videopoet.core.errors import ConfigError
from videopoet.plugins.structure.checks import check_map, check_video
from videopoet.plugins.structure.depth import DepthEstimator
from videopoet.plugins.structure.flow import PRESETS, FlowPreset, optical_flow

ThirdChannel = Literal["depth", "depth_model", "luminance", "edges"]
Fallback = Literal["luminance", "edges"]
FALLBACKS: tuple[str, ...] = ("luminance", "edges")
#: flow is divided by this fraction of min(H, W) pixels (as the world's structure clip)
FLOW_SCALE = 0.05
#: Rec. 709 luma weights of R, G, B (they sum to 1, so [-1, 1] maps onto [-1, 1])
LUMA = (0.2126, 0.7152, 0.0722)
#: Sobel magnitude of a full-contrast step (0 to 1) across a straight edge
SOBEL_STEP = 4.0


@dataclass(frozen=True)
class StructureClip:
    """A structure clip and what it holds.

    ``video``: ``(3, T, H, W)`` float32 in ``[-1, 1]`` (flow x, flow y, third channel), on
    the input's device. ``third_channel``: which signal the third channel is.
    ``flow_scale``: the pixels of flow that map to +-1.
    """

    video: torch.Tensor
    third_channel: ThirdChannel
    flow_scale: float


def luminance(video: torch.Tensor) -> torch.Tensor:
    """Rec. 709 luma ``(T, H, W)`` in ``[0, 1]`` of a ``(3, T, H, W)`` clip in ``[-1, 1]``.

    The weights apply to the stored (gamma-encoded) values, so this is luma, the brightness a
    viewer sees, which is what a stylization keeps when it keeps the scene's shading.
    """
    video = check_video(video)
    weights = torch.tensor(LUMA, device=video.device).view(3, 1, 1, 1)
    return ((video * weights).sum(0) + 1) / 2


def edges(video: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of the luma, ``(T, H, W)`` in ``[0, 1]``: 1 at a full step.

    Fixed scale, not per-frame normalization, so a clip's edges do not flicker with its
    content; borders are replicated so the frame's edge is not an edge.
    """
    luma = luminance(video)[:, None]  # (T, 1, H, W)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=luma.device)
    kernels = torch.stack([kx, kx.t()])[:, None]  # (2, 1, 3, 3): d/dx, d/dy
    grad = F.conv2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), kernels)
    return (grad.square().sum(1).sqrt() / SOBEL_STEP).clamp(0, 1)


def structure_clip(
    video: torch.Tensor,
    *,
    depth: torch.Tensor | None = None,
    depth_model: DepthEstimator | None = None,
    fallback: Fallback = "luminance",
    flow_scale: float | None = None,
    flow_preset: FlowPreset = "medium",
) -> StructureClip:
    """The ``(3, T, H, W)`` structure clip of ``video`` (flow x, flow y, third channel).

    ``video``: ``(3, T, H, W)`` float in ``[-1, 1]``. The third channel is ``depth``
    (``(T, H, W)`` in ``[0, 1]``, 0 near) if given, else ``depth_model(video)`` if given,
    else the ``fallback`` (``"luminance"`` or ``"edges"``); the result says which.
    ``flow_scale``: pixels of flow that map to +-1 (default 5 % of min(H, W)).
    ``flow_preset``: the DIS preset (see :mod:`videopoet.plugins.structure.flow`).
    Bad inputs raise :class:`ConfigError` naming the field.
    """
    video = check_video(video)
    _, frames, height, width = video.shape
    if flow_preset not in PRESETS:
        raise ConfigError("flow_preset", flow_preset, f"one of {list(PRESETS)}")
    if fallback not in FALLBACKS:
        raise ConfigError("fallback", fallback, f"one of {list(FALLBACKS)} (no weights needed)")
    if depth_model is not None and not callable(depth_model):
        raise ConfigError(
            "depth_model",
            type(depth_model).__name__,
            "a callable DepthEstimator (load a saved one with load_depth_model(path))",
        )
    if flow_scale is None:
        flow_scale = FLOW_SCALE * min(height, width)
    elif isinstance(flow_scale, bool) or not isinstance(flow_scale, int | float):
        raise ConfigError("flow_scale", flow_scale, "a positive number of pixels")
    if not (math.isfinite(flow_scale) and flow_scale > 0):
        raise ConfigError("flow_scale", flow_scale, "a positive number of pixels")
    if depth is not None:
        depth = check_map(depth, "depth", frames, height, width).to(video.device)
    flow = optical_flow(video, preset=flow_preset)
    third_channel: ThirdChannel
    if depth is not None:
        third, third_channel = depth * 2 - 1, "depth"
    elif depth_model is not None:
        with torch.no_grad():
            estimate = depth_model(video)
        estimate = check_map(estimate, "depth_model.output", frames, height, width)
        third, third_channel = estimate.to(video.device) * 2 - 1, "depth_model"
    elif fallback == "edges":
        third, third_channel = edges(video) * 2 - 1, "edges"
    else:
        third, third_channel = luminance(video) * 2 - 1, "luminance"
    flow = (flow / flow_scale).clamp(-1, 1).permute(1, 0, 2, 3)  # (2, T, H, W)
    clip = torch.cat([flow, third[None]], 0).float()
    return StructureClip(video=clip, third_channel=third_channel, flow_scale=float(flow_scale))
