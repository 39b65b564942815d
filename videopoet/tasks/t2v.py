"""Text-to-video."""

from videopoet.core.declarations import PrefixSpec, TargetSpec, TaskSpec
from videopoet.tasks.base import Task

T2V = TaskSpec(
    name="t2v",
    description="text-to-video",
    task_token="video",
    prefix=PrefixSpec(text=True),
    target=TargetSpec(visual="video"),
)


class TextToVideo(Task):
    """The declaration's default behaviour (tasks/base.py) is this task's."""

    spec = T2V


SPECS = [TextToVideo]
