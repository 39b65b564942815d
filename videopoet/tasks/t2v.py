"""Text-to-video."""

from videopoet.core.declarations import PrefixSpec, TargetSpec, TaskSpec

T2V = TaskSpec(
    name="t2v",
    description="text-to-video",
    task_token="video",
    prefix=PrefixSpec(text=True),
    target=TargetSpec(visual="video"),
)

SPECS = [T2V]
