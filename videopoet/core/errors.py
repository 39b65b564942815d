"""Errors a user can read: each names the field, the value and what was expected."""

from __future__ import annotations


class VideoPoetError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(VideoPoetError, ValueError):
    """A value given by the user (CLI flag, recipe, config, format) is not acceptable."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}={value!r}: expected {expected}")


class UnknownNameError(VideoPoetError, KeyError):
    """A task, tokenizer or plugin name that is not registered."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        import difflib

        self.kind, self.name, self.known = kind, name, known
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        shown = ", ".join(sorted(known)) or "none"
        super().__init__(f"unknown {kind} {name!r} (registered: {shown}){hint}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.args[0]


class PluginError(VideoPoetError):
    """A plugin failed to load or declared something invalid."""


class DuplicateNameError(PluginError):
    """Two plugins registered the same name."""


class VocabularyError(VideoPoetError):
    """The token table is full, or conflicts with the installed plugins."""


class LayoutError(VideoPoetError, ValueError):
    """A layout cannot be built for the requested task, format or inputs."""
