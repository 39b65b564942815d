"""Loading a recipe: YAML through omegaconf (variables, interpolation, ``key=value`` overrides),
then the pydantic schema. Nothing here imports code or reads media.

Order: the file (or a built-in's, or a dict) → overrides merged as an omegaconf dotlist →
refused import keys (``_target_`` ...) → missing values (``???``) → step references
(``${steps.NAME.OUTPUT}`` become :class:`~videopoet.recipes.schema.StepRef`) → interpolation →
schema. Every problem found at a stage is reported together, naming its dotted path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from videopoet.core.errors import ConfigError, UnknownNameError
from videopoet.recipes.errors import RecipeError, one_of, problem
from videopoet.recipes.schema import IMPORT_KEYS, Recipe, Step, known_fields

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"

#: ``${steps.NAME.OUTPUT}`` as a whole value: a reference to an earlier step's output
REF = re.compile(r"^\$\{\s*steps\.([A-Za-z_][A-Za-z0-9_-]*)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}$")
#: ``${a.b.c}`` as a whole value (followed to tell where a value came from)
WHOLE = re.compile(r"^\$\{\s*([A-Za-z0-9_][A-Za-z0-9_.\-]*)\s*\}$")
MISSING = "???"


@dataclass(frozen=True)
class RecipeSource:
    """Where a recipe comes from: a YAML file (``builtin`` for one shipped here) or a dict."""

    name: str
    path: Path | None = None
    builtin: bool = False

    def __str__(self) -> str:
        if self.builtin:
            return f"builtin:{self.name}"
        return str(self.path) if self.path is not None else "(dict)"


@dataclass
class LoadedRecipe:
    """A validated recipe and what is needed to resolve its relative paths."""

    recipe: Recipe
    source: RecipeSource
    overrides: list[str]
    raw: dict[str, Any]  # merged, unresolved: to follow interpolations back to their origin
    override_keys: set[str]
    cwd: Path
    allow: list[Path] = field(default_factory=list)
    base_dir: Path | None = None  # for a dict recipe

    @property
    def folder(self) -> Path:
        """Where the recipe's own relative paths start: its file's folder, else ``base_dir``
        (a dict) or the working directory (a built-in recipe, a dict without ``base_dir``)."""
        if self.source.path is not None and not self.source.builtin:
            return self.source.path.parent.resolve()
        return (self.base_dir or self.cwd).resolve()

    @property
    def roots(self) -> list[Path]:
        """The folders file inputs must lie in: the recipe's folder, the working directory and
        any folder allowed explicitly (``allow=`` / ``--allow``)."""
        out: list[Path] = []
        for root in [self.folder, self.cwd.resolve(), *(Path(p).resolve() for p in self.allow)]:
            if root not in out:
                out.append(root)
        return out

    def from_command_line(self, dotted: str) -> bool:
        """Whether the value at ``dotted`` was given as an override (directly, or through a
        chain of whole-value interpolations such as ``image: ${inputs.image}``)."""
        key, seen = dotted, set()
        while key not in seen and len(seen) < 32:
            seen.add(key)
            if any(key == o or key.startswith(o + ".") for o in self.override_keys):
                return True
            found, value = _lookup(self.raw, key)
            match = WHOLE.match(value) if found and isinstance(value, str) else None
            if match is None:
                return False
            key = match.group(1)
        return False

    def base_for(self, dotted: str) -> Path:
        """The folder a relative path at ``dotted`` is relative to: the working directory for
        a value from the command line, else the recipe's folder."""
        return self.cwd.resolve() if self.from_command_line(dotted) else self.folder


# ---------------------------------------------------------------------------- built-ins


def builtin_recipes() -> list[dict[str, str]]:
    """The built-in recipes: ``name``, ``description`` and ``path`` of each, by name."""
    import yaml

    out = []
    for path in sorted(BUILTIN_DIR.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):  # a broken file shows in the list, unexplained
            data = {}
        description = str(data.get("description", "")).strip() if isinstance(data, dict) else ""
        out.append({"name": path.stem, "description": description, "path": str(path)})
    return out


def find_recipe(recipe: str | Path) -> RecipeSource:
    """A recipe file (a file that exists, a name ending ``.yaml``/``.yml`` or holding a
    ``/``) or a built-in recipe by name."""
    text = str(recipe)
    path = Path(text).expanduser()
    looks_like_file = path.suffix in (".yaml", ".yml") or "/" in text or path.is_file()
    if looks_like_file:
        if not path.is_file():
            raise ConfigError("recipe", text, "an existing YAML file or a built-in recipe name")
        return RecipeSource(_safe_name(path.stem), path.resolve())
    names = [r["name"] for r in builtin_recipes()]
    if text not in names:
        raise UnknownNameError("recipe", text, names)
    return RecipeSource(text, BUILTIN_DIR / f"{text}.yaml", builtin=True)


def _safe_name(stem: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]", "_", stem) or "recipe"
    return name if re.match(r"^[A-Za-z_]", name) else f"r_{name}"


# ---------------------------------------------------------------------------- loading


def load_recipe(
    recipe: str | Path | dict[str, Any],
    overrides: list[str] | None = None,
    *,
    cwd: str | Path | None = None,
    allow: list[str | Path] | tuple = (),
    base_dir: str | Path | None = None,
    optional: tuple[str, ...] = (),
) -> LoadedRecipe:
    """Load and validate a recipe (a path, a built-in name or a dict) with ``key=value``
    overrides; raises :class:`RecipeError` listing every problem found. Keys in ``optional``
    may be left missing (``???``): they load as null (``bundle`` when an engine is given)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    overrides = [str(o) for o in (overrides or [])]
    if isinstance(recipe, dict):
        source = RecipeSource(_safe_name(str(recipe.get("name", "recipe"))))
        config = _create(recipe, "recipe")
    else:
        source = find_recipe(recipe)
        config = _create(_read(source.path), str(source.path))
    label = source.name
    bad = [o for o in overrides if "=" not in o or not o.partition("=")[0].strip()]
    if bad:
        raise RecipeError(label, [problem("override", bad[0], "KEY=VALUE, e.g. bundle=DIR")])
    dotlist = None
    if overrides:
        try:
            dotlist = OmegaConf.from_dotlist(overrides)
            config = OmegaConf.merge(config, dotlist)
        except (OmegaConfBaseException, ValueError) as exc:
            shown = " ".join(overrides)
            expected = f"KEY=VALUE ({_line(exc)})"
            raise RecipeError(label, [problem("override", shown, expected)]) from None
    raw = OmegaConf.to_container(config, resolve=False)
    if not isinstance(raw, dict):
        raise RecipeError(label, [problem("recipe", str(source), "a YAML mapping with steps")])
    override_keys = (
        set(_leaves(OmegaConf.to_container(dotlist, resolve=False))) if dotlist else set()
    )

    for key in optional:
        if raw.get(key) == MISSING:
            raw[key] = None
    problems = [
        problem(key, value, "no import paths: a recipe names registered tasks and refiners")
        for key, value in _import_keys(raw)
    ]
    problems += [
        problem(key, MISSING, f"a value; give it on the command line: {key}=...")
        for key, value in _walk(raw)
        if value == MISSING
    ]
    if problems:
        raise RecipeError(label, problems)

    converted = _convert_refs(raw)
    try:
        resolved = OmegaConf.to_container(OmegaConf.create(converted), resolve=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "recipe"
        found, value = _lookup(raw, str(key))
        expected = f"an interpolation that resolves ({_line(exc)})"
        if "steps." in str(exc):
            expected += "; an earlier step's output is the whole value: ${steps.NAME.OUTPUT}"
        raise RecipeError(label, [problem(str(key), value if found else None, expected)]) from None
    resolved.setdefault("name", source.name)
    try:
        model = Recipe.model_validate(resolved)
    except ValidationError as exc:
        raise RecipeError(label, _schema_problems(exc)) from None
    return LoadedRecipe(
        recipe=model,
        source=source,
        overrides=overrides,
        raw=raw,
        override_keys=override_keys,
        cwd=Path(cwd) if cwd is not None else Path.cwd(),
        allow=[Path(p) for p in allow],
        base_dir=Path(base_dir) if base_dir is not None else None,
    )


def _read(path: Path | None) -> str:
    assert path is not None
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError("recipe", str(path), f"a readable YAML file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            "recipe", str(path), f"a UTF-8 YAML file (byte {exc.start} is not UTF-8)"
        ) from None


def _create(content: str | dict[str, Any], where: str) -> Any:
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.create(content)
    except (yaml.YAMLError, OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(
            "recipe", where, f"valid YAML ({_line(exc)}); quote ${{...}} inside {{...}} mappings"
        ) from None


def _line(exc: Exception) -> str:
    text = str(exc).replace('in "<unicode string>", ', "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines[:3]) or type(exc).__name__


def _walk(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf value) of every leaf."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{prefix}.{index}" if prefix else str(index))
    else:
        yield prefix, node


def _leaves(node: Any) -> list[str]:
    return [key for key, _ in _walk(node)]


def _import_keys(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            dotted = f"{prefix}.{key}" if prefix else str(key)
            if str(key) in IMPORT_KEYS:
                yield dotted, value if isinstance(value, str) else str(key)
            yield from _import_keys(value, dotted)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _import_keys(value, f"{prefix}.{index}" if prefix else str(index))


def _lookup(node: Any, dotted: str) -> tuple[bool, Any]:
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def _convert_refs(node: Any) -> Any:
    """Whole-value ``${steps.NAME.OUTPUT}`` strings → ``{"step": NAME, "output": OUTPUT}``;
    ``${steps.NAME.inputs.text}`` and other keys of a step stay omegaconf interpolations."""
    if isinstance(node, dict):
        return {k: _convert_refs(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_convert_refs(v) for v in node]
    if isinstance(node, str):
        match = REF.match(node)
        if match and match.group(2) not in Step.model_fields:
            return {"step": match.group(1), "output": match.group(2)}
    return node


def _schema_problems(exc: ValidationError) -> list[ConfigError]:
    out = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        key = ".".join(str(p) for p in loc) or "recipe"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            known = known_fields(loc) or []
            message = one_of(loc[-1], known, "one of the known keys")
            if str(loc[-1]) in IMPORT_KEYS:
                message = "no import paths: a recipe names registered tasks and refiners"
        out.append(problem(key, error.get("input"), message))
    return out
