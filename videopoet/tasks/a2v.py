"""Audio-to-video."""

from videopoet.core.declarations import PrefixSpec, TargetSpec, TaskSpec
from videopoet.tasks.base import Task

A2V = TaskSpec(
    name="a2v",
    description="audio-to-video",
    task_token="a2v",
    prefix=PrefixSpec(audio=True),
    target=TargetSpec(visual="video"),
    cfg_drop=("audio",),
)


class AudioToVideo(Task):
    """The declaration's default behaviour (tasks/base.py) is this task's."""

    spec = A2V


SPECS = [AudioToVideo]
