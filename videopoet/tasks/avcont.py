"""Audio-video continuation: the first frames and their sound condition the whole clip."""

from videopoet.core.declarations import PrefixSpec, TargetSpec, TaskSpec
from videopoet.tasks.base import Task

AVCONT = TaskSpec(
    name="avcont",
    description="audio-video continuation from the first 5 frames and their audio",
    task_token="avcont",
    prefix=PrefixSpec(visual="video", audio=True, condition_frames=5),
    target=TargetSpec(visual="video", audio=True),
    cfg_drop=(),
)


class AudioVideoContinuation(Task):
    """The declaration's default behaviour (tasks/base.py) is this task's."""

    spec = AVCONT


SPECS = [AudioVideoContinuation]
