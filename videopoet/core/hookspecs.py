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
    """Return tasks: ``videopoet.Task`` subclasses, each carrying its ``TaskSpec`` as ``spec``
    (its behaviour: training examples, input preparation, media out), or bare ``TaskSpec``
    records, which get the base class's behaviour derived from the declaration."""


@hookspec
def register_refiners() -> list:
    """Return post-steps such as super-resolution: ``RefinerSpec`` records."""
