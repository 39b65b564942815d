"""Audio-to-video."""

from videopoet.core.declarations import PrefixSpec, TargetSpec, TaskSpec

A2V = TaskSpec(
    name="a2v",
    description="audio-to-video",
    task_token="a2v",
    prefix=PrefixSpec(audio=True),
    target=TargetSpec(visual="video"),
    cfg_drop=("audio",),
)

SPECS = [A2V]
