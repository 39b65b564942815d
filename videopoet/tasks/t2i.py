"""Text-to-image: the image is the first latent frame of a video; ``<eos>`` is left out (4.1)."""

from videopoet.core.declarations import IMAGE_FORMAT, PrefixSpec, TargetSpec, TaskSpec
from videopoet.tasks.base import Task

T2I = TaskSpec(
    name="t2i",
    description="text-to-image",
    task_token="image",
    prefix=PrefixSpec(text=True),
    target=TargetSpec(visual="image"),
    formats=(IMAGE_FORMAT,),
    eos=False,
)


class TextToImage(Task):
    """The declaration's default behaviour (tasks/base.py) is this task's."""

    spec = T2I


SPECS = [TextToImage]
