"""Video-to-audio."""

from videopoet.core.declarations import PrefixSpec, TargetSpec, TaskSpec

V2A = TaskSpec(
    name="v2a",
    description="video-to-audio",
    task_token="v2a",
    prefix=PrefixSpec(visual="video"),
    target=TargetSpec(audio=True),
    cfg_drop=("visual",),
)

SPECS = [V2A]
