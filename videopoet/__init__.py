"""videopoet: a plugin-based implementation of VideoPoet (a prefix LM for video generation)."""

from videopoet.core.declarations import (
    AudioTokenizerSpec,
    Format,
    PrefixSpec,
    RefinerSpec,
    TargetSpec,
    TaskSpec,
    TextEncoderSpec,
    VisualTokenizerSpec,
)
from videopoet.core.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "AudioTokenizerSpec",
    "Format",
    "PrefixSpec",
    "RefinerSpec",
    "TargetSpec",
    "TaskSpec",
    "TextEncoderSpec",
    "VisualTokenizerSpec",
    "hookimpl",
    "__version__",
]
