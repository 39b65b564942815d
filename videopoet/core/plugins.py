"""Plugin discovery and the typed registry the engine reads.

Plugins are modules (or objects) implementing the hooks of :mod:`videopoet.core.hookspecs`,
found through entry points of group ``videopoet.plugins``. Each entry point is loaded and each
hook is called inside its own ``try``: a broken plugin is recorded in :attr:`Registry.plugins`
with its error and skipped, the others load. ``strict=True`` (or ``VIDEOPOET_STRICT_PLUGINS=1``)
raises instead, for tests. ``VIDEOPOET_DISABLED_PLUGINS=a,b`` blocks plugins by entry-point name.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy
from pydantic import BaseModel, ValidationError

from videopoet.core import hookspecs
from videopoet.core.declarations import (
    RefinerSpec,
    TaskSpec,
    TextEncoderSpec,
    TokenizerSpec,
)
from videopoet.core.errors import DuplicateNameError, PluginError, UnknownNameError

log = logging.getLogger(__name__)

GROUP = "videopoet.plugins"
DISABLED_ENV = "VIDEOPOET_DISABLED_PLUGINS"
STRICT_ENV = "VIDEOPOET_STRICT_PLUGINS"

#: Used only when the package metadata is missing (running from a source tree not installed).
BUILTIN_PLUGINS = {
    "tasks": "videopoet.tasks",
    "magvit2": "videopoet.plugins.magvit",
    "encodec16k": "videopoet.plugins.encodec_audio",
    "text_encoders": "videopoet.plugins.text",
    "superres": "videopoet.plugins.superres",
}

#: hook name -> (registry attribute, accepted declaration type)
HOOKS: dict[str, tuple[str, type[BaseModel]]] = {
    "register_tokenizers": ("tokenizers", TokenizerSpec),
    "register_text_encoders": ("text_encoders", TextEncoderSpec),
    "register_tasks": ("tasks", TaskSpec),
    "register_refiners": ("refiners", RefinerSpec),
}

#: The tokenizer each modality uses unless a config names another.
DEFAULT_TOKENIZERS = {"visual": "magvit2", "audio": "encodec16k"}


@dataclass
class PluginInfo:
    """One plugin as `videopoet plugins` shows it."""

    name: str
    distribution: str
    version: str
    hooks: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class Registry:
    """Everything the installed plugins declare, by name."""

    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    tokenizers: dict[str, TokenizerSpec] = field(default_factory=dict)
    text_encoders: dict[str, TextEncoderSpec] = field(default_factory=dict)
    refiners: dict[str, RefinerSpec] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)
    #: (registry attribute, name) -> the plugin that declared it
    owners: dict[tuple[str, str], PluginInfo] = field(default_factory=dict)
    #: task name -> the Task class registered with it (a bare TaskSpec gets the base class)
    task_classes: dict[str, type] = field(default_factory=dict)

    def task(self, name: str) -> TaskSpec:
        return self._get("tasks", "task", name)

    def task_behaviour(self, name: str) -> Any:
        """A :class:`~videopoet.tasks.base.Task` instance for the registered task ``name``."""
        spec = self.task(name)
        cls = self.task_classes.get(name)
        if cls is None:
            from videopoet.tasks.base import task_class

            cls = task_class(spec)
        return cls(spec)

    def owner(self, attribute: str, name: str) -> str:
        """The distribution that declared ``name`` (``videopoet`` for the built-ins)."""
        info = self.owners.get((attribute, name))
        return info.distribution if info is not None else "?"

    def tokenizer(self, name: str) -> TokenizerSpec:
        return self._get("tokenizers", "tokenizer", name)

    def text_encoder(self, name: str) -> TextEncoderSpec:
        return self._get("text_encoders", "text encoder", name)

    def refiner(self, name: str) -> RefinerSpec:
        return self._get("refiners", "refiner", name)

    def tokenizer_for(self, modality: str, name: str | None = None) -> TokenizerSpec:
        """The tokenizer named, else the default of ``modality``, else its only one."""
        if name is not None:
            spec = self.tokenizer(name)
            if spec.modality != modality:
                raise UnknownNameError(f"{modality} tokenizer", name, self._of(modality))
            return spec
        default = DEFAULT_TOKENIZERS.get(modality)
        if default in self.tokenizers:
            return self.tokenizers[default]
        candidates = self._of(modality)
        if len(candidates) != 1:
            raise UnknownNameError(f"{modality} tokenizer", default or "?", candidates)
        return self.tokenizers[candidates[0]]

    def _of(self, modality: str) -> list[str]:
        return [n for n, s in self.tokenizers.items() if s.modality == modality]

    def _get(self, attribute: str, kind: str, name: str) -> Any:
        table = getattr(self, attribute)
        if name not in table:
            raise UnknownNameError(kind, name, list(table))
        return table[name]


def _entry_points() -> list[metadata.EntryPoint]:
    seen: set[tuple[str, str]] = set()
    unique = []
    for ep in metadata.entry_points(group=GROUP):
        if (ep.name, ep.value) not in seen:  # editable installs can list one twice
            seen.add((ep.name, ep.value))
            unique.append(ep)
    return unique


def _as_declaration(item: Any, expected: type[BaseModel]) -> BaseModel:
    spec = getattr(item, "spec", item)  # a Task class carries its declaration as `spec`
    if isinstance(spec, dict):
        spec = expected.model_validate(spec)
    if not isinstance(spec, expected):
        raise PluginError(f"returned {type(item).__name__}, expected a {expected.__name__}")
    return spec


class _Loader:
    def __init__(self, strict: bool, disabled: set[str]) -> None:
        self.strict, self.disabled = strict, disabled
        self.pm = pluggy.PluginManager("videopoet")
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()

    def fail(self, info: PluginInfo, message: str, exc: Exception | None = None) -> None:
        info.errors.append(message)
        log.warning("videopoet plugin %s (%s): %s", info.name, info.distribution, message)
        if self.strict:
            error_type = DuplicateNameError if isinstance(exc, DuplicateNameError) else PluginError
            raise error_type(f"plugin {info.name} ({info.distribution}): {message}") from exc

    def add(self, name: str, distribution: str, version: str, load: Any) -> None:
        info = PluginInfo(name, distribution, version)
        self.registry.plugins.append(info)
        if name in self.disabled:
            info.errors.append(f"disabled by {DISABLED_ENV}")
            return
        try:
            plugin = load()
            self.pm.register(plugin, name=name)
        except Exception as exc:  # noqa: BLE001 - any import error of a plugin is reported
            self.fail(info, f"failed to load: {type(exc).__name__}: {exc}", exc)
            return
        try:
            self.pm.check_pending()  # a misspelled hook name fails loudly
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(plugin)
            self.fail(info, f"invalid hook: {exc}", exc)
            return
        for hook in self.pm.get_hookcallers(plugin) or []:
            info.hooks.append(hook.name)
            self.collect(info, plugin, hook.name)

    def collect(self, info: PluginInfo, plugin: Any, hook_name: str) -> None:
        attribute, expected = HOOKS[hook_name]
        table = getattr(self.registry, attribute)
        impl = next(
            i for i in getattr(self.pm.hook, hook_name).get_hookimpls() if i.plugin is plugin
        )
        try:
            items = impl.function() or []
            declarations = [_as_declaration(item, expected) for item in items]
            item_of = {d.name: i for d, i in zip(declarations, items, strict=True)}
        except ValidationError as exc:
            self.fail(info, f"{hook_name} returned an invalid declaration: {exc}", exc)
            return
        except Exception as exc:  # noqa: BLE001
            self.fail(info, f"{hook_name} failed: {type(exc).__name__}: {exc}", exc)
            return
        for spec in declarations:
            owner = self.registry.owners.get((attribute, spec.name))
            if owner is not None:
                message = (
                    f"duplicate {attribute[:-1].replace('_', ' ')} name {spec.name!r}: declared by "
                    f"{owner.name} ({owner.distribution}) and {info.name} ({info.distribution})"
                )
                self.fail(info, message, DuplicateNameError(message))
                continue
            table[spec.name] = spec
            self.registry.owners[(attribute, spec.name)] = info
            if attribute == "tasks" and isinstance(item_of.get(spec.name), type):
                self.registry.task_classes[spec.name] = item_of[spec.name]

    def check_geometry(self) -> None:
        """Drop (and report) tasks whose condition frames no registered video tokenizer takes:
        a declaration that cannot work fails when its plugin registers, not at layout time."""
        from videopoet.core.declarations import VisualTokenizerSpec

        visual = [
            s for s in self.registry.tokenizers.values() if isinstance(s, VisualTokenizerSpec)
        ]
        for name, spec in list(self.registry.tasks.items()):
            wanted = sorted(
                {v.frames for v in spec.prefix.visual_inputs if v.frames}
                | ({spec.prefix.condition_frames} if spec.prefix.condition_frames else set())
            )
            fits = [t.name for t in visual if all((f - 1) % t.temporal_factor == 0 for f in wanted)]
            if wanted and visual and not fits:
                info = self.registry.owners.pop(("tasks", name))
                del self.registry.tasks[name]
                self.registry.task_classes.pop(name, None)
                factors = sorted({t.temporal_factor for t in visual})
                self.fail(
                    info,
                    f"task {name}: condition frames {', '.join(map(str, wanted))} fit no "
                    "installed video tokenizer (they take 1 + k x "
                    f"{' or '.join(map(str, factors))} frames: 1, 5, 9, ...)",
                    PluginError(name),
                )


def load_registry(
    *,
    strict: bool | None = None,
    disabled: Iterable[str] | None = None,
    extra_plugins: Iterable[tuple[str, Any]] = (),
    entry_points: bool = True,
) -> Registry:
    """Discover and load every plugin; ``extra_plugins`` are (name, object) pairs added after."""
    if strict is None:
        strict = os.environ.get(STRICT_ENV, "") not in ("", "0")
    if disabled is None:
        disabled = [n for n in os.environ.get(DISABLED_ENV, "").split(",") if n.strip()]
    loader = _Loader(strict, {n.strip() for n in disabled})
    if entry_points:
        found = _entry_points()
        found_values = {ep.value for ep in found}
        for name, module in BUILTIN_PLUGINS.items():
            if module not in found_values:
                loader.add(name, "videopoet", _version("videopoet"), _importer(module))
        for ep in found:
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            loader.add(ep.name, dist, version, ep.load)
    for name, plugin in extra_plugins:
        loader.add(name, "(in process)", "", lambda plugin=plugin: plugin)
    loader.check_geometry()
    return loader.registry


def _importer(module: str) -> Any:
    return lambda: importlib.import_module(module)


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "source"


@functools.cache
def get_registry() -> Registry:
    """The registry of the installed plugins, loaded once per process."""
    return load_registry()
