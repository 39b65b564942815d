"""The hooks a videopoet plugin can implement.

Every hook takes no argument and returns a list of declarations. Built-in tokenizers and
tasks register through these same hooks, found through the same entry-point group, so a
third-party plugin has exactly the power of a built-in one.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("videopoet")
hookimpl = pluggy.HookimplMarker("videopoet")


@hookspec
def register_tokenizers() -> list:
    """Return discrete tokenizers: ``VisualTokenizerSpec`` / ``AudioTokenizerSpec`` records."""


@hookspec
def register_text_encoders() -> list:
    """Return text encoders: ``TextEncoderSpec`` records."""


@hookspec
def register_tasks() -> list:
    """Return tasks: ``TaskSpec`` records (or ``Task`` subclasses carrying a ``spec``)."""


@hookspec
def register_refiners() -> list:
    """Return post-steps such as super-resolution: ``RefinerSpec`` records."""
