"""Structure signals for stylization (paper 4.1): optical flow, depth, and named fallbacks.

- :func:`optical_flow`: dense flow with OpenCV's DIS estimator (no weights, offline).
- :func:`load_depth_model`: a depth model from a local directory (safetensors + config.json),
  any :class:`DepthEstimator`; :class:`TinyDepthNet` is the shipped architecture (no weights).
- :func:`luminance`, :func:`edges`: weights-free third channels for real video, named for what
  they are, never called depth.
- :func:`structure_clip`: flow x, flow y and the third channel as one ``(3, T, H, W)`` clip in
  ``[-1, 1]`` for the visual tokenizer, with a record of which third channel it holds.

This package is a library, not a registered plugin: the stylize task imports it. See
docs/structure.md.
"""

from videopoet.plugins.structure.depth import (
    DepthEstimator,
    TinyDepthConfig,
    TinyDepthNet,
    depth_model_kinds,
    load_depth_model,
    register_depth_model,
)
from videopoet.plugins.structure.flow import FlowPreset, optical_flow, require_cv2
from videopoet.plugins.structure.signals import (
    FLOW_SCALE,
    Fallback,
    StructureClip,
    ThirdChannel,
    edges,
    luminance,
    structure_clip,
)

__all__ = [
    "FLOW_SCALE",
    "DepthEstimator",
    "Fallback",
    "FlowPreset",
    "StructureClip",
    "ThirdChannel",
    "TinyDepthConfig",
    "TinyDepthNet",
    "depth_model_kinds",
    "edges",
    "load_depth_model",
    "luminance",
    "optical_flow",
    "register_depth_model",
    "require_cv2",
    "structure_clip",
]
