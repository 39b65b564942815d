"""A third-party videopoet plugin: play a clip backwards.

The engine is not touched: this module declares a task and registers it through the
``videopoet.plugins`` entry point in this package's pyproject.toml.
"""

import videopoet
from videopoet import PrefixSpec, TargetSpec, TaskSpec

REVERSE = TaskSpec(
    name="reverse",
    description="video reversal: the clip conditions the same clip played backwards",
    task_token="reverse",
    prefix=PrefixSpec(visual="video"),
    target=TargetSpec(visual="video"),
    cfg_drop=(),
)


@videopoet.hookimpl
def register_tasks():
    return [REVERSE]
