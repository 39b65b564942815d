"""Weights on disk: safetensors beside a JSON config, written atomically; nothing unpickles.

Files and directories written here get the permissions the process umask gives (0644 / 0755
under the usual 022), not the 0600 / 0700 of the :mod:`tempfile` names they are written under.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
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
    path = Path(path)
    if not path.is_file():
        raise ConfigError("path", str(path), "an existing JSON file")
    return json.loads(path.read_text())


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
    path = Path(path)
    if not path.is_file():
        raise ConfigError("path", str(path), "an existing .safetensors file")
    return load_file(str(path), device=str(device))


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
    if not (directory / CONFIG_NAME).is_file():
        raise ConfigError(
            "directory", str(directory), f"a directory holding {CONFIG_NAME} and {WEIGHTS_NAME}"
        )
    return load_tensors(directory / WEIGHTS_NAME, device), load_json(directory / CONFIG_NAME)
