"""Frame prediction: the first frames of a clip condition the whole clip (causal tokenizer).

Training draws the number of condition frames (1, 5, 9, ... below the clip's length), so one
model continues from a single frame or from a second of video; a user gives a video and
optionally ``condition_frames`` (default 5, the paper's 1 + 4 frames).
"""

from __future__ import annotations

import random
from typing import Any

import torch

from videopoet.core.declarations import Format, PrefixSpec, TargetSpec, TaskSpec, VisualInput
from videopoet.tasks.base import Context, InputError, InputInfo, Source, Task, TaskExample

FP = TaskSpec(
    name="fp",
    description="video future prediction from the first frames (5 by default)",
    task_token="fp",
    prefix=PrefixSpec(visual="video", condition_frames=5),
    target=TargetSpec(visual="video"),
    cfg_drop=(),
)


class FramePrediction(Task):
    spec = FP

    def extra_inputs(self) -> list[InputInfo]:
        return [InputInfo("condition_frames", "number", True, "frames given: 1, 5, 9, ...")]

    def prepare(self, inputs: dict[str, Any], context: Context):  # noqa: ANN201
        frames = inputs.get("condition_frames")
        if frames is None:
            return super().prepare(inputs, context)
        fmt = context.format
        try:
            frames = int(frames)
        except (TypeError, ValueError):
            frames = -1
        if frames < 1 or (frames - 1) % 4 or frames >= fmt.frames:
            raise InputError(
                self.name,
                "condition_frames",
                inputs.get("condition_frames"),
                f"1 + 4k frames below the output's {fmt.frames} (1, 5, 9, ...)",
            )
        rest = {k: v for k, v in inputs.items() if k != "condition_frames"}
        out = super().prepare(rest, context)
        out.visual["visual"] = self.load_video("video", inputs["video"], fmt, frames)
        return out

    def build_example(self, source: Source, fmt: Format, rng: random.Random) -> TaskExample:
        example = super().build_example(source, fmt, rng)
        choices = list(range(1, fmt.frames, 4))
        frames = rng.choice(choices)
        example.conditions.visual["visual"] = example.video[:, :frames]
        return example

    def condition_video(
        self, entry: VisualInput, clip: torch.Tensor, inputs: dict[str, Any], context: Context
    ) -> torch.Tensor:
        return clip


SPECS = [FramePrediction]
