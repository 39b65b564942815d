"""Video-to-audio."""

from videopoet.core.declarations import PrefixSpec, TargetSpec, TaskSpec
from videopoet.tasks.base import Task

V2A = TaskSpec(
    name="v2a",
    description="video-to-audio",
    task_token="v2a",
    prefix=PrefixSpec(visual="video"),
    target=TargetSpec(audio=True),
    cfg_drop=("visual",),
)


class VideoToAudio(Task):
    """The declaration's default behaviour (tasks/base.py) is this task's."""

    spec = V2A


SPECS = [VideoToAudio]
