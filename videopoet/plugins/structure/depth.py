"""Depth models for the stylization task's third channel, loaded from a local directory only.

A depth model is anything callable as ``model(video) -> depth`` (:class:`DepthEstimator`):
``video`` is ``(3, T, H, W)`` float in ``[-1, 1]``, ``depth`` is ``(T, H, W)`` in ``[0, 1]``
with 0 near, as the world's ground truth. Trained weights come from the user as a path to a
directory holding ``config.json`` and ``model.safetensors`` (nothing is fetched from a hub
or a URL: runs stay offline and reproducible, and safetensors never unpickles code);
``config.json``'s ``kind`` names the network class in a small registry
(:func:`register_depth_model`), so another package adds an architecture with one call and no
new plugin hook.

The project ships one architecture, ``tiny_depth`` (:class:`TinyDepthNet`), a small per-frame
CNN: it fixes the format and is the thing tests save and load. It ships no trained weights;
without a depth model the structure clip's third channel is a weights-free signal named for
what it is (luminance or edges, :mod:`videopoet.plugins.structure.signals`), never "depth".
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from videopoet.core.errors import ConfigError, DuplicateNameError
from videopoet.core.serialization import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    load_json,
    load_tensors,
    save_pretrained,
)


@runtime_checkable
class DepthEstimator(Protocol):
    """``(3, T, H, W)`` float in ``[-1, 1]`` -> ``(T, H, W)`` in ``[0, 1]``, 0 near, 1 far."""

    def __call__(self, video: torch.Tensor) -> torch.Tensor: ...


#: builds an (untrained) network from its config.json; the loader then fills in the weights
DepthFactory = Callable[[dict[str, Any]], nn.Module]
_REGISTRY: dict[str, DepthFactory] = {}


def register_depth_model(kind: str, factory: DepthFactory) -> None:
    """Make ``config.json`` files whose ``kind`` is ``kind`` load through ``factory(config)``.

    The factory returns an ``nn.Module`` that is a :class:`DepthEstimator` and whose
    ``state_dict`` keys are those of the directory's ``model.safetensors``.
    """
    if kind in _REGISTRY and _REGISTRY[kind] is not factory:
        raise DuplicateNameError(f"depth model kind {kind!r} is already registered")
    _REGISTRY[kind] = factory


def depth_model_kinds() -> list[str]:
    """The registered depth-model kinds (``config.json``'s ``kind``)."""
    return sorted(_REGISTRY)


def load_depth_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """The depth model saved in the local directory ``path``, in eval mode on ``device``.

    The directory holds ``config.json`` (with ``kind``, a registered architecture) and
    ``model.safetensors``. Anything missing or mismatched is a :class:`ConfigError` naming the
    path; nothing is downloaded.
    """
    directory = Path(path).expanduser()
    where = "a local directory holding config.json and model.safetensors (never a URL or hub id)"
    if not directory.is_dir():
        raise ConfigError("depth_model.path", str(path), f"{where}; it does not exist")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise ConfigError("depth_model.path", str(path), f"{where}; it has no {name}")
    config = load_json(directory / CONFIG_NAME)
    kind = config.get("kind") if isinstance(config, dict) else None
    if kind not in _REGISTRY:
        raise ConfigError(
            "depth_model.kind", kind, f"a registered depth model kind {depth_model_kinds()}"
        )
    model = _REGISTRY[kind](config)
    state = load_tensors(directory / WEIGHTS_NAME)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(
            "depth_model.weights", str(directory / WEIGHTS_NAME), f"weights of its config ({first})"
        ) from exc
    return model.to(device).eval()


class TinyDepthConfig(BaseModel):
    """Constructor arguments of :class:`TinyDepthNet`; saved as its ``config.json``."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["tiny_depth"] = "tiny_depth"
    channels: int = Field(16, ge=1, le=1024)
    layers: int = Field(3, ge=1, le=32, description="3x3 convolutions before the 1x1 head")


class TinyDepthNet(nn.Module):
    """A small per-frame CNN giving depth in ``[0, 1]`` (sigmoid head); the reference kind.

    Each frame goes through ``layers`` 3x3 convolutions with GELU and a 1x1 head; frames are
    independent (depth is a per-image quantity; temporal smoothing is left to bigger models).
    """

    def __init__(self, config: TinyDepthConfig | None = None) -> None:
        super().__init__()
        self.config = config or TinyDepthConfig()
        width, blocks = self.config.channels, []
        for i in range(self.config.layers):
            blocks += [nn.Conv2d(3 if i == 0 else width, width, 3, padding=1), nn.GELU()]
        self.body = nn.Sequential(*blocks)
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """``(3, T, H, W)`` in ``[-1, 1]`` -> ``(T, H, W)`` in ``[0, 1]`` on ``video``'s device."""
        weight = self.head.weight
        frames = video.permute(1, 0, 2, 3).to(device=weight.device, dtype=weight.dtype)
        depth = torch.sigmoid(self.head(self.body(frames)))[:, 0]
        return depth.to(video.device)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """``directory/model.safetensors`` + ``config.json``, for :func:`load_depth_model`."""
        return save_pretrained(directory, self, self.config.model_dump(mode="json"))


def _tiny_depth(config: dict[str, Any]) -> nn.Module:
    try:
        return TinyDepthNet(TinyDepthConfig(**config))
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or "config"
        raise ConfigError(f"depth_model.{field}", error.get("input"), error["msg"]) from exc


register_depth_model("tiny_depth", _tiny_depth)
