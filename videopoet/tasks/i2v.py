"""Image-to-video: the first frame (and optionally a caption) conditions the whole clip."""

from videopoet.core.declarations import PrefixSpec, TargetSpec, TaskSpec

I2V = TaskSpec(
    name="i2v",
    description="image-to-video (caption optional)",
    task_token="video",
    prefix=PrefixSpec(text=True, visual="image", optional=("text",)),
    target=TargetSpec(visual="video"),
)

SPECS = [I2V]
