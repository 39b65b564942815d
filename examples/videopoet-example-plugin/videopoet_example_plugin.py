"""A third-party videopoet plugin: play a clip backwards.

The engine is not touched: this module declares a task, says how a training example is cut
from a clip (the target is the clip reversed), and registers it through the
``videopoet.plugins`` entry point in this package's pyproject.toml. Input preparation (a
``video`` file or tensor) and output (the generated clip) are the base class's defaults.
"""

import random

import videopoet
from videopoet import Format, PrefixSpec, Source, TargetSpec, Task, TaskExample, TaskSpec

REVERSE = TaskSpec(
    name="reverse",
    description="video reversal: the clip conditions the same clip played backwards",
    task_token="reverse",
    prefix=PrefixSpec(visual="video"),
    target=TargetSpec(visual="video"),
    cfg_drop=(),
)


class Reverse(Task):
    spec = REVERSE

    def build_example(self, source: Source, fmt: Format, rng: random.Random) -> TaskExample:
        example = super().build_example(source, fmt, rng)
        example.video = example.video.flip(1)  # (3, T, H, W): time runs backwards
        return example


@videopoet.hookimpl
def register_tasks():
    return [Reverse]
