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

    def input_frames(self, entry: VisualInput, inputs: dict[str, Any], fmt: Format) -> int:
        """``condition_frames`` when given (checked), else the declared 5: only those are read,
        so a 1-frame clip is enough for ``condition_frames=1``."""
        frames = inputs.get("condition_frames")
        if frames is None:
            return super().input_frames(entry, inputs, fmt)
        try:
            count = int(frames)
        except (TypeError, ValueError):
            count = -1
        if count < 1 or (count - 1) % 4 or count >= fmt.frames:
            raise InputError(
                self.name,
                "condition_frames",
                frames,
                f"1 + 4k frames below the output's {fmt.frames} (1, 5, 9, ...)",
            )
        return count

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
