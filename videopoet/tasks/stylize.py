"""Stylization: text plus a structure clip (optical flow and depth as 3 channels, 4.1)."""

from videopoet.core.declarations import PrefixSpec, TargetSpec, TaskSpec

STYLIZE = TaskSpec(
    name="stylize",
    description="video stylization from text, optical flow and depth",
    task_token="stylize",
    prefix=PrefixSpec(text=True, visual="structure_video"),
    target=TargetSpec(visual="video"),
)

SPECS = [STYLIZE]
