"""Inpainting and outpainting: a COMMIT-encoded masked clip conditions the full clip."""

from videopoet.core.declarations import PrefixSpec, TargetSpec, TaskSpec

INPAINT = TaskSpec(
    name="inpaint",
    description="video inpainting of a masked centre region (text optional)",
    task_token="inpaint",
    prefix=PrefixSpec(text=True, visual="masked_video", optional=("text",)),
    target=TargetSpec(visual="video"),
)

SPECS = [INPAINT]
