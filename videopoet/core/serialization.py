"""Weights on disk: safetensors beside a JSON config, written atomically; nothing unpickles.

Files and directories written here get the permissions the process umask gives (0644 / 0755
under the usual 022), not the 0600 / 0700 of the :mod:`tempfile` names they are written under.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from videopoet.core.errors import ConfigError

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def umask_mode(directory: bool = False) -> int:
    """The mode ``open()`` / ``mkdir()`` would give a new file (or directory) under the umask.

    ``tempfile.mkstemp`` / ``mkdtemp`` create 0600 / 0700 whatever the umask; a file renamed
    into place from them gets this mode instead, so other users read results as they expect.
    """
    mask = os.umask(0)  # the only portable way to read the umask before Python 3.13
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: never a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, umask_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def load_json(path: str | os.PathLike) -> Any:
    """The JSON value in ``path``; a missing, unreadable or malformed file is a ConfigError
    naming it (and the line and column of a syntax error)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("path", str(path), "an existing JSON file")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ConfigError("path", str(path), f"a readable JSON file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        detail = f"byte {exc.object[exc.start]:#04x} at offset {exc.start} is not UTF-8"
        raise ConfigError("path", str(path), f"a UTF-8 JSON file ({detail})") from None
    except json.JSONDecodeError as exc:
        detail = f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
        raise ConfigError("path", str(path), f"a valid JSON file ({detail})") from None


def save_tensors(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict | None = None
) -> None:
    """Atomic safetensors write; shared or non-contiguous tensors are copied first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        plain = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
        save_file(plain, tmp, metadata={k: str(v) for k, v in (meta or {}).items()})
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tensors(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a missing, truncated or corrupt file is a
    ConfigError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("path", str(path), "an existing .safetensors file")
    try:
        return load_file(str(path), device=str(device))
    except SafetensorError as exc:
        raise ConfigError(
            "path", str(path), f"a complete safetensors file (it is truncated or corrupt: {exc})"
        ) from None
    except OSError as exc:
        raise ConfigError("path", str(path), f"a readable safetensors file ({exc})") from None


def save_pretrained(
    directory: str | os.PathLike,
    model: torch.nn.Module,
    config: dict[str, Any],
    extra_json: dict[str, Any] | None = None,
) -> Path:
    """``directory/model.safetensors`` + ``config.json`` (+ one JSON file per ``extra_json`` key).

    The weights are written before the config, so a directory with a config is complete.
    """
    directory = Path(directory)
    save_tensors(directory / WEIGHTS_NAME, model.state_dict())
    for name, obj in (extra_json or {}).items():
        save_json(directory / name, obj)
    save_json(directory / CONFIG_NAME, config)
    return directory


def load_pretrained(
    directory: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, config) from a directory written by :func:`save_pretrained`."""
    directory = Path(directory)
    expected = f"a directory holding {CONFIG_NAME} and {WEIGHTS_NAME}"
    if not directory.is_dir():
        raise ConfigError("directory", str(directory), f"{expected}; it does not exist")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise ConfigError("directory", str(directory), f"{expected}; it has no {name}")
    config = load_json(directory / CONFIG_NAME)
    if not isinstance(config, dict):
        got = type(config).__name__
        raise ConfigError("path", str(directory / CONFIG_NAME), f"a JSON object, not a {got}")
    return load_tensors(directory / WEIGHTS_NAME, device), config


def describe_checkpoint(config: dict[str, Any]) -> str:
    """What a saved ``config.json`` says it holds, for errors: its ``kind`` and ``name``, and
    whether that name is a registered video or audio tokenizer."""
    kind, name = config.get("kind"), config.get("name")
    modality = None
    if isinstance(name, str):
        try:
            from videopoet.core.plugins import get_registry

            modality = get_registry().tokenizer(name).modality
        except Exception:  # noqa: BLE001 - an unregistered name is only described less
            modality = None
    what = {"visual": "a video tokenizer", "audio": "an audio tokenizer"}.get(modality or "")
    recorded = ", ".join(f"{k} {v!r}" for k, v in (("kind", kind), ("name", name)) if v)
    if what:
        return f"{what} ({recorded})"
    return f"a checkpoint of {recorded}" if recorded else "a checkpoint of no recorded kind"


def wrong_kind(directory: str | os.PathLike, config: dict[str, Any], expected: str) -> ConfigError:
    """The error for a directory that holds another kind of checkpoint than ``expected``."""
    found = describe_checkpoint(config)
    return ConfigError("directory", str(directory), f"{expected}; its {CONFIG_NAME} holds {found}")


def load_weights(
    model: torch.nn.Module,
    state: dict[str, torch.Tensor],
    path: str | os.PathLike,
    expected: str,
) -> None:
    """Load ``state`` into ``model`` strictly: missing, unexpected or differently shaped
    tensors are a ConfigError naming ``path`` (the weights file) and the first offenders."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if reshaped:
        k = reshaped[0]
        problems.append(
            f"{len(reshaped)} of another shape, e.g. {k} is {tuple(state[k].shape)} in the "
            f"file, {tuple(own[k].shape)} in the model"
        )
    if missing:
        problems.append(f"{len(missing)} missing, e.g. {', '.join(missing[:3])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected, e.g. {', '.join(unexpected[:3])}")
    if problems:
        raise ConfigError("weights", str(path), f"{expected} ({'; '.join(problems)})")
    model.load_state_dict(state)


def write_atomic_dir(directory: str | os.PathLike, fill: Any) -> Path:
    """Build a directory beside ``directory`` with ``fill(tmp)``, then swap it in whole.

    A reader never sees a half-written bundle: it sees the old one or the new one.
    """
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir(mode=umask_mode(directory=True))
    try:
        fill(tmp)
        if target.exists():
            old = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.old"
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
