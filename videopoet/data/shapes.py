"""Moving shapes: coloured discs, squares and rings bouncing on a background.

A stand-in dataset for tokenizer training until the built-in synthetic world lands. Every clip
is a pure function of ``(seed, index)``: the same arguments give the same pixels on any
machine, so held-out sets are just other indices (:data:`EVAL_OFFSET` apart).

Clips are ``(3, T, H, W)`` float32 in ``[-1, 1]``; a 1-frame clip is an image.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field

from videopoet.core.errors import ConfigError

#: indices from here on are the held-out split
EVAL_OFFSET = 1_000_000_000
KINDS = ("disc", "square", "ring")


class ShapesConfig(BaseModel):
    """What the generator draws; also the ``data:`` section of a tokenizer training YAML."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = "shapes"
    frames: int = Field(17, ge=1)
    height: int = Field(128, ge=8)
    width: int = Field(128, ge=8)
    min_shapes: int = Field(1, ge=0)
    max_shapes: int = Field(4, ge=0)
    min_size: float = Field(0.08, gt=0, le=1, description="radius as a fraction of min(H, W)")
    max_size: float = Field(0.22, gt=0, le=1)
    max_speed: float = Field(0.06, ge=0, description="per frame, as a fraction of the size")
    image_fraction: float = Field(0.25, ge=0, le=1, description="share of 1-frame batches")
    seed: int = 0
    eval_clips: int = Field(16, ge=1)


def _colour(g: torch.Generator) -> torch.Tensor:
    return torch.rand(3, generator=g) * 2 - 1


def make_clip(
    index: int,
    frames: int = 17,
    height: int = 128,
    width: int = 128,
    seed: int = 0,
    config: ShapesConfig | None = None,
) -> torch.Tensor:
    """Clip ``index`` of the dataset seeded ``seed``: ``(3, frames, height, width)`` in [-1, 1]."""
    cfg = config or ShapesConfig()
    if cfg.min_shapes > cfg.max_shapes:
        raise ConfigError("data.min_shapes", cfg.min_shapes, f"<= max_shapes={cfg.max_shapes}")
    if cfg.min_size > cfg.max_size:
        raise ConfigError("data.min_size", cfg.min_size, f"<= max_size={cfg.max_size}")
    g = torch.Generator().manual_seed((seed * 0x9E3779B97F4A7C15 + index) % 2**63)
    ys = torch.arange(height, dtype=torch.float32).view(height, 1) + 0.5
    xs = torch.arange(width, dtype=torch.float32).view(1, width) + 0.5
    # background: a soft linear gradient between two colours
    top, bottom = _colour(g) * 0.6, _colour(g) * 0.6
    angle = torch.rand((), generator=g).item() * 2 * math.pi
    ramp = (math.cos(angle) * xs / width + math.sin(angle) * ys / height).clamp(-1, 1) * 0.5 + 0.5
    background = top.view(3, 1, 1) * (1 - ramp) + bottom.view(3, 1, 1) * ramp
    video = background.unsqueeze(1).repeat(1, frames, 1, 1)
    unit = min(height, width)
    count = int(torch.randint(cfg.min_shapes, cfg.max_shapes + 1, (), generator=g))
    for _ in range(count):
        kind = KINDS[int(torch.randint(len(KINDS), (), generator=g))]
        radius = unit * (cfg.min_size + (cfg.max_size - cfg.min_size) * torch.rand((), generator=g))
        radius = float(radius)
        colour = _colour(g)
        pos = torch.rand(2, generator=g) * torch.tensor([height, width])
        velocity = (torch.rand(2, generator=g) * 2 - 1) * cfg.max_speed * unit
        for t in range(frames):
            py, px = (_bounce(float(pos[i] + velocity[i] * t), (height, width)[i]) for i in (0, 1))
            dy, dx = ys - py, xs - px
            if kind == "disc":
                inside = radius - torch.sqrt(dy**2 + dx**2)
            elif kind == "square":
                inside = radius - torch.maximum(dy.abs(), dx.abs())
            else:
                dist = torch.sqrt(dy**2 + dx**2)
                inside = torch.minimum(radius - dist, dist - radius * 0.55)
            alpha = (inside + 0.5).clamp(0, 1)  # one pixel of anti-aliasing
            video[:, t] = video[:, t] * (1 - alpha) + colour.view(3, 1, 1) * alpha
    return video.clamp(-1, 1)


def _bounce(x: float, size: int) -> float:
    """Reflect a free position into [0, size): the shape bounces off the borders."""
    period = 2 * size
    x = x % period
    return x if x < size else period - x


def make_batch(
    indices: list[int], frames: int, height: int, width: int, config: ShapesConfig
) -> torch.Tensor:
    return torch.stack(
        [make_clip(i, frames, height, width, seed=config.seed, config=config) for i in indices]
    )


class ShapesDataset(torch.utils.data.Dataset):
    """``length`` clips; ``split="eval"`` gives clips no training index ever produces."""

    def __init__(self, config: ShapesConfig, length: int, split: str = "train") -> None:
        if split not in ("train", "eval"):
            raise ConfigError("split", split, "'train' or 'eval'")
        self.config, self.length = config, length
        self.offset = EVAL_OFFSET if split == "eval" else 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.length:
            raise IndexError(index)
        c = self.config
        return make_clip(self.offset + index, c.frames, c.height, c.width, c.seed, c)
