"""Stylization: text plus a structure clip, and optionally the first frame (paper 4.1).

The structure clip has three channels, optical flow x and y and depth, normalized to
[-1, 1] and encoded by the visual tokenizer like any clip. In training on the world the flow
and depth are its ground truth; for a user's video the flow is OpenCV's DIS estimate and the
third channel is depth from a depth model given by local path (``depth_model``), else a
weights-free luminance channel (docs/structure.md).
"""

from __future__ import annotations

from typing import Any

import torch

from videopoet.core.declarations import Format, PrefixSpec, TargetSpec, TaskSpec, VisualInput
from videopoet.tasks.base import Context, InputInfo, Source, Task

STYLIZE = TaskSpec(
    name="stylize",
    description="video stylization from text, optical flow and depth (first frame optional)",
    task_token="stylize",
    prefix=PrefixSpec(
        text=True,
        visual=(
            VisualInput(name="structure", kind="structure_video"),
            VisualInput(name="first_frame", kind="image", optional=True),
        ),
    ),
    target=TargetSpec(visual="video"),
)


class Stylize(Task):
    spec = STYLIZE
    optional_drop = 0.5  # the first frame: half of the examples stylize without it

    def input_key(self, entry: VisualInput) -> str:
        return {"structure": "video", "first_frame": "image"}[entry.name]

    def extra_inputs(self) -> list[InputInfo]:
        return [InputInfo("depth_model", "text", True, "local folder of a depth model")]

    def structure(
        self, clip: torch.Tensor, inputs: dict[str, Any], context: Context
    ) -> torch.Tensor:
        from videopoet.plugins.structure import load_depth_model, structure_clip

        model = inputs.get("depth_model")
        depth_model = load_depth_model(model) if model is not None else None
        return structure_clip(clip, depth_model=depth_model).video

    def source_structure(self, source: Source, fmt: Format) -> torch.Tensor:
        video = source.video[:, : fmt.frames]
        if source.flow is not None and source.depth is not None:
            return ground_truth_structure(source.flow, source.depth, fmt)
        from videopoet.plugins.structure import structure_clip

        return structure_clip(video).video


def ground_truth_structure(flow: torch.Tensor, depth: torch.Tensor, fmt: Format) -> torch.Tensor:
    """(3, T, H, W) in [-1, 1] from known flow (T - 1, 2, H, W) px and depth (T, H, W) in [0, 1]."""
    from videopoet.plugins.structure import FLOW_SCALE  # the same normalization as for DIS

    frames = fmt.frames
    scale = FLOW_SCALE * min(fmt.height, fmt.width)
    if frames > 1:
        flow = flow[: frames - 1]
        flow = torch.cat([flow, flow[-1:]], 0)
    else:
        flow = torch.zeros(1, 2, fmt.height, fmt.width)
    flow = (flow / scale).clamp(-1, 1).permute(1, 0, 2, 3)
    return torch.cat([flow, (depth[:frames] * 2 - 1)[None]], 0).float()


SPECS = [Stylize]
