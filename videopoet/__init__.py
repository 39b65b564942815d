"""videopoet: a plugin-based implementation of VideoPoet (a prefix LM for video generation)."""

from videopoet.core.declarations import (
    AudioTokenizerSpec,
    Format,
    PrefixSpec,
    RefinerSpec,
    TargetSpec,
    TaskSpec,
    TextEncoderSpec,
    VisualInput,
    VisualTokenizerSpec,
)
from videopoet.core.hookspecs import hookimpl
from videopoet.tasks.base import (
    Conditions,
    Context,
    InputError,
    InputInfo,
    Source,
    Task,
    TaskExample,
    TaskOutput,
)

__version__ = "0.1.0"

__all__ = [
    "AudioTokenizerSpec",
    "Conditions",
    "Context",
    "Engine",
    "InputError",
    "InputInfo",
    "Source",
    "Task",
    "TaskExample",
    "TaskOutput",
    "VisualInput",
    "Format",
    "PrefixSpec",
    "RefinerSpec",
    "TargetSpec",
    "TaskSpec",
    "TextEncoderSpec",
    "VisualTokenizerSpec",
    "hookimpl",
    "run_recipe",
    "__version__",
]


def __getattr__(name: str):  # the Engine pulls in the model: import it only when asked
    if name == "Engine":
        from videopoet.core.engine import Engine

        return Engine
    if name == "run_recipe":  # recipes run the Engine: imported when asked, like it
        from videopoet.recipes.runner import run_recipe

        return run_recipe
    raise AttributeError(f"module 'videopoet' has no attribute {name!r}")
