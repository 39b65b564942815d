"""Image-to-video: the first frame (and optionally a caption) conditions the whole clip."""

from videopoet.core.declarations import PrefixSpec, TargetSpec, TaskSpec
from videopoet.tasks.base import Task

I2V = TaskSpec(
    name="i2v",
    description="image-to-video (caption optional)",
    task_token="video",
    prefix=PrefixSpec(text=True, visual="image", optional=("text",)),
    target=TargetSpec(visual="video"),
)


class ImageToVideo(Task):
    """The declaration's default behaviour (tasks/base.py) is this task's."""

    spec = I2V


SPECS = [ImageToVideo]
