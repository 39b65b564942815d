"""What one super-resolution stage is: its token grid, windows, widths and sampling defaults.

A :class:`StageConfig` is the ``stage:`` section of ``videopoet train-refiner`` configs and the
record saved beside a trained stage's weights. It is validated when the config is read, before
any tokenizer or data is touched: a window that does not divide the token grid, or whose
spatial sides cannot be divided by the scale (the low-resolution window is the same window at
``1 / scale`` of the spatial size, paper A.3), is an error naming ``windows`` and the axis.

Axes are ``(t, h, w)``: latent frames, rows, columns (the order of the tokenizer's raster).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from videopoet.core.bundle import TextEncoderRecord

#: the three layers of a block, in order: self-attention windows along one axis each
AXES = ("vertical", "horizontal", "temporal")

Shape = tuple[int, int, int]


class WindowShapes(BaseModel):
    """Self-attention window ``(t, h, w)`` of the vertical, horizontal and temporal layers."""

    model_config = ConfigDict(extra="forbid")

    vertical: Shape
    horizontal: Shape
    temporal: Shape

    @field_validator("vertical", "horizontal", "temporal")
    @classmethod
    def _positive(cls, value: Shape) -> Shape:
        if any(v < 1 for v in value):
            raise ValueError(f"{tuple(value)}: every side must be at least 1")
        return tuple(int(v) for v in value)

    def items(self) -> list[tuple[str, Shape]]:
        return [(axis, getattr(self, axis)) for axis in AXES]


def window_problem(window: Shape, grid: Shape, scale: int) -> str | None:
    """Why ``window`` cannot tile ``grid`` (or its low-resolution twin), or None."""
    for side, w, g in zip("thw", window, grid, strict=True):
        if w > g or g % w:
            return f"{w} does not divide the grid's {g} along {side}"
    for side, w in zip("hw", window[1:], strict=True):
        if w % scale:
            return (
                f"its {side} side {w} is not a multiple of the scale {scale} (the low-resolution "
                "window is the same window at 1/scale of the spatial size)"
            )
    return None


def effective_window(window: Shape, grid: Shape) -> Shape:
    """The window on a grid smaller than the one it was set for: each side clipped to the
    grid's (a 1-frame image gets 1-frame temporal windows)."""
    return tuple(min(w, g) for w, g in zip(window, grid, strict=True))


def lr_window(window: Shape, scale: int) -> Shape:
    """The isomorphic low-resolution window: the same frames, ``1 / scale`` of each spatial
    side (at least 1 token, for a window clipped on a small grid)."""
    return (window[0], max(1, window[1] // scale), max(1, window[2] // scale))


def split_bits(bits: int, groups: int) -> list[int]:
    """Bits per factorized group, as even as possible, the larger groups first: ``(18, 2) ->
    [9, 9]``, ``(10, 2) -> [5, 5]``, ``(9, 2) -> [5, 4]``."""
    base, extra = divmod(bits, groups)
    return [base + (1 if g < extra else 0) for g in range(groups)]


class StageConfig(BaseModel):
    """One 2x (or ``scale``x) stage: sizes, windows, factorization, sampling defaults."""

    model_config = ConfigDict(extra="forbid")

    scale: int = Field(2, ge=2, le=8, description="spatial upscaling of the stage")
    grid: Shape = Field(description="high-resolution latent grid (t, h, w) it is built for")
    windows: WindowShapes
    codebook_bits: int = Field(ge=1, le=24, description="the visual tokenizer's bits")
    groups: int = Field(2, ge=1, description="token factorization: k heads of bits / k bits")
    width: int = Field(128, ge=8)
    heads: int = Field(4, ge=1)
    blocks: int = Field(
        2, ge=1, description="blocks of three layers (vertical, horizontal, temporal)"
    )
    mlp_ratio: float = Field(4.0, gt=0)
    text_dim: int = Field(64, ge=1, description="width of the text encoder's embeddings")
    lr_in_input: bool = Field(
        True,
        description="also add each high-resolution position's low-resolution token embedding "
        "to its input (beside the windowed cross-attention)",
    )
    # sampling defaults (paper A.3: 24 steps; guidance 4.0 / 1.0 at stage one, 8.0 / 2.0 at two)
    steps: int = Field(24, ge=1)
    text_scale: float = Field(4.0, ge=0)
    lr_scale: float = Field(1.0, ge=0)
    temperature: float = Field(1.0, ge=0, description="0: the most likely token")
    choice_temperature: float = Field(
        4.5, ge=0, description="noise on the confidence that picks what stays (MaskGIT)"
    )
    # what it was trained with (filled in by the trainer; checked when it runs)
    tokenizer: str | None = Field(None, description="registered visual tokenizer name")
    tokenizer_identity: str | None = Field(None, description="fingerprint of its weights")
    text_encoder: TextEncoderRecord | None = None

    @field_validator("grid")
    @classmethod
    def _grid(cls, value: Shape, info: ValidationInfo) -> Shape:
        scale = info.data.get("scale", 2)
        if any(v < 1 for v in value):
            raise ValueError(f"{tuple(value)}: every side must be at least 1")
        for side, g in zip("hw", value[1:], strict=True):
            if g % scale:
                raise ValueError(f"its {side} side {g} is not a multiple of the scale {scale}")
        return tuple(int(v) for v in value)

    @field_validator("windows")
    @classmethod
    def _windows(cls, value: WindowShapes, info: ValidationInfo) -> WindowShapes:
        grid, scale = info.data.get("grid"), info.data.get("scale", 2)
        if grid is None:  # the grid's own error is reported
            return value
        for axis, window in value.items():
            problem = window_problem(window, grid, scale)
            if problem:
                raise ValueError(f"{axis} window {window} on the grid {grid}: {problem}")
        return value

    @field_validator("groups")
    @classmethod
    def _groups(cls, value: int, info: ValidationInfo) -> int:
        bits = info.data.get("codebook_bits")
        if bits is not None and value > bits:
            raise ValueError(f"{value} groups of a {bits}-bit codebook: at most {bits}")
        return value

    @field_validator("heads")
    @classmethod
    def _heads(cls, value: int, info: ValidationInfo) -> int:
        width = info.data.get("width")
        if width is not None and width % value:
            raise ValueError(f"the width {width} is not divisible by {value} heads")
        return value

    # ------------------------------------------------------------------ derived

    @property
    def lr_grid(self) -> Shape:
        t, h, w = self.grid
        return (t, h // self.scale, w // self.scale)

    @property
    def group_bits(self) -> list[int]:
        return split_bits(self.codebook_bits, self.groups)

    @property
    def tokens(self) -> int:
        return math.prod(self.grid)

    @property
    def mlp_dim(self) -> int:
        return int(round(self.width * self.mlp_ratio))

    def parameter_count(self) -> int:
        """Parameters of the network this config builds (without building it)."""
        d, f = self.width, self.mlp_dim
        sizes = [2**b for b in self.group_bits]
        embed = sum(n + 1 for n in sizes) * d * 2  # high- and low-resolution tables (+ mask)
        heads = sum(d * n + n for n in sizes)
        positions = (sum(self.grid) + sum(self.lr_grid)) * d
        attention = 4 * (d * d + d)  # q, k, v, out with biases
        layer = 3 * attention + (2 * d * f + f + d) + 5 * 2 * d  # 3 attentions, MLP, 5 norms
        extra = (d * d + d) if self.lr_in_input else 0
        text = self.text_dim * d + d + d  # projection and the null text key
        return embed + heads + positions + 3 * self.blocks * layer + extra + text + 2 * d

    def record(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


#: The paper's two stages (A.3): 17x448x256 -> (5, 56, 32) tokens, then 17x896x512 ->
#: (5, 112, 64), with the 2^18-code tokenizer factorized into two 9-bit groups. Widths are ours
#: (the paper gives 1B and 500M parameters): 2048 x 12 layers and 1536 x 9 layers.
PAPER_STAGES: dict[str, dict[str, Any]] = {
    "paper_stage1": {
        "scale": 2,
        "grid": (5, 56, 32),
        "windows": {"vertical": (1, 56, 4), "horizontal": (1, 8, 32), "temporal": (5, 8, 8)},
        "codebook_bits": 18,
        "groups": 2,
        "width": 2048,
        "heads": 16,
        "blocks": 4,
        "text_dim": 2048,
        "lr_in_input": False,
        "steps": 24,
        "text_scale": 4.0,
        "lr_scale": 1.0,
    },
    "paper_stage2": {
        "scale": 2,
        "grid": (5, 112, 64),
        "windows": {"vertical": (1, 112, 2), "horizontal": (1, 4, 64), "temporal": (5, 8, 8)},
        "codebook_bits": 18,
        "groups": 2,
        "width": 1536,
        "heads": 12,
        "blocks": 3,
        "text_dim": 2048,
        "lr_in_input": False,
        "steps": 24,
        "text_scale": 8.0,
        "lr_scale": 2.0,
    },
}
