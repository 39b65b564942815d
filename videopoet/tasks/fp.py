"""Frame prediction: the first frames of a clip condition the whole clip (causal tokenizer)."""

from videopoet.core.declarations import PrefixSpec, TargetSpec, TaskSpec

FP = TaskSpec(
    name="fp",
    description="video future prediction from the first 5 frames",
    task_token="fp",
    prefix=PrefixSpec(visual="video", condition_frames=5),
    target=TargetSpec(visual="video"),
    cfg_drop=(),
)

SPECS = [FP]
