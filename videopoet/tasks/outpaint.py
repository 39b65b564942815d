"""Outpainting: a COMMIT-encoded clip with its border masked conditions the full clip."""

from videopoet.core.declarations import PrefixSpec, TargetSpec, TaskSpec

OUTPAINT = TaskSpec(
    name="outpaint",
    description="video outpainting of a masked border (text optional)",
    task_token="outpaint",
    prefix=PrefixSpec(text=True, visual="masked_video", optional=("text",)),
    target=TargetSpec(visual="video"),
)

SPECS = [OUTPAINT]
