"""Unconditional generation: video (shares the video task token) and image."""

from videopoet.core.declarations import IMAGE_FORMAT, TargetSpec, TaskSpec
from videopoet.tasks.base import Task

UNCOND = TaskSpec(
    name="uncond",
    description="unconditional video generation",
    task_token="video",
    target=TargetSpec(visual="video"),
    cfg_drop=(),
)

UNCOND_IMAGE = TaskSpec(
    name="uncond_image",
    description="unconditional image generation (a 1-frame video, no <eos>)",
    task_token="image",
    target=TargetSpec(visual="image"),
    formats=(IMAGE_FORMAT,),
    eos=False,
    cfg_drop=(),
)


class Unconditional(Task):
    spec = UNCOND


class UnconditionalImage(Task):
    spec = UNCOND_IMAGE


SPECS = [Unconditional, UnconditionalImage]
