"""Typed declarations that plugins return from their hooks.

A declaration says what a plugin is (its geometry, its layout) apart from any network, so
vocabularies and layouts exist before any weights do. The heavy part (a torch module) is
built by the declaration's ``factory`` only when needed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from videopoet.core.errors import ConfigError

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
FPS = 8  # every visual format of the paper is sampled at 8 frames per second
MAX_TEXT_TOKENS = 64


class _Declaration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class Format(_Declaration):
    """A visual output format: frame count and size in pixels (height × width)."""

    frames: int = Field(17, ge=1)
    height: int = Field(128, ge=1)
    width: int = Field(128, ge=1)

    @property
    def seconds(self) -> float:
        return self.frames / FPS

    @property
    def is_image(self) -> bool:
        return self.frames == 1

    def __str__(self) -> str:
        return f"{self.frames}x{self.height}x{self.width}"


#: The formats of the paper (4.1): two resolutions × two lengths, and the 1-frame image.
IMAGE_FORMAT = Format(frames=1, height=128, width=128)
VIDEO_FORMATS = (
    Format(frames=17, height=128, width=128),
    Format(frames=17, height=224, width=128),
    Format(frames=41, height=128, width=128),
    Format(frames=41, height=224, width=128),
)


# ---------------------------------------------------------------------------- tokenizers


class TokenizerSpec(_Declaration):
    """What every discrete tokenizer declares: a name, a modality and its codebooks."""

    name: str = Field(pattern=NAME_PATTERN)
    modality: Literal["visual", "audio"]
    description: str = ""
    factory: Callable[..., Any] | None = Field(default=None, exclude=True)

    @property
    def codebook_sizes(self) -> list[int]:
        """One size per disjoint vocabulary range (RVQ level for audio)."""
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        return sum(self.codebook_sizes)


class VisualTokenizerSpec(TokenizerSpec):
    """A causal video tokenizer: frame 0 alone, then every ``temporal_factor`` frames."""

    modality: Literal["visual"] = "visual"
    codebook_bits: int = Field(18, ge=1, le=24)
    temporal_factor: int = Field(4, ge=1)
    spatial_factor: int = Field(8, ge=1)
    channels: int = Field(3, ge=1)

    @property
    def codebook_sizes(self) -> list[int]:
        return [2**self.codebook_bits]

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(t, h, w) of the latent grid for a clip; raises ConfigError on a bad geometry."""
        t = self.temporal_factor
        if frames < 1 or (frames - 1) % t:
            raise ConfigError(
                "frames", frames, f"1 + {t}k frames (1, {1 + t}, {1 + 2 * t}, ..., 17, 41)"
            )
        for field, value in (("height", height), ("width", width)):
            if value < self.spatial_factor or value % self.spatial_factor:
                raise ConfigError(field, value, f"a positive multiple of {self.spatial_factor}")
        s = self.spatial_factor
        return (1 + (frames - 1) // t, height // s, width // s)

    def token_count(self, frames: int, height: int, width: int) -> int:
        return math.prod(self.latent_shape(frames, height, width))


class AudioTokenizerSpec(TokenizerSpec):
    """A residual-VQ audio tokenizer, flattened level by level (paper 3.1, "transposed")."""

    modality: Literal["audio"] = "audio"
    sample_rate: int = Field(16_000, ge=1)
    frame_rate: float = Field(50.0, gt=0)
    levels: int = Field(4, ge=1)
    codebook_size: int = Field(1024, ge=2)

    @property
    def codebook_sizes(self) -> list[int]:
        return [self.codebook_size] * self.levels

    @property
    def hop_length(self) -> int:
        return round(self.sample_rate / self.frame_rate)

    def latent_frames(self, seconds: float) -> int:
        """Whole latent frames in ``seconds`` of audio: the partial last frame is dropped."""
        if seconds <= 0:
            raise ConfigError("audio_seconds", seconds, "a positive duration in seconds")
        frames = math.floor(seconds * self.frame_rate + 1e-9)
        if frames < 1:
            raise ConfigError(
                "audio_seconds", seconds, f"at least one latent frame ({1 / self.frame_rate:g} s)"
            )
        return frames

    def token_count(self, seconds: float) -> int:
        return self.latent_frames(seconds) * self.levels


# ---------------------------------------------------------------------------- text encoders


class TextEncoderSpec(_Declaration):
    """A text encoder: returns up to 64 embeddings of width ``dim`` and a mask."""

    name: str = Field(pattern=NAME_PATTERN)
    dim: int = Field(ge=1)
    description: str = ""
    factory: Callable[..., Any] | None = Field(default=None, exclude=True)


# ---------------------------------------------------------------------------- refiners


class RefinerSpec(_Declaration):
    """A post-step on generated tokens or media (super-resolution, ...)."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    factory: Callable[..., Any] | None = Field(default=None, exclude=True)


# ---------------------------------------------------------------------------- tasks

VisualInputKind = Literal["image", "video", "masked_video", "structure_video"]
#: Input names that are not visual inputs; a visual input may not take them.
RESERVED_INPUTS = ("text", "audio")


class VisualInput(_Declaration):
    """One visual condition of a prefix: its own ``<bov_i> … <eov_i>`` span (Figure 3).

    ``name`` is the input's name for users (``videopoet generate --image``, ``engine.generate(
    image=...)``) and the span's (``{name}_in``); the default ``visual`` keeps the paper's
    single-input spans (``bov_i``, ``visual_in``, ``eov_i``). ``frames``: frames of a video
    condition shorter than the output (frame prediction); ``None`` takes the output's.
    """

    name: str = Field("visual", pattern=NAME_PATTERN)
    kind: VisualInputKind
    frames: int | None = Field(default=None, ge=1)
    optional: bool = False

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_INPUTS:
            raise ValueError(f"a visual input may not be named {value!r} (reserved)")
        return value

    @property
    def span(self) -> str:
        return f"{self.name}_in"

    @property
    def markers(self) -> tuple[str, str]:
        """Span names of its begin/end tokens (the token ids are always <bov_i>/<eov_i>)."""
        if self.name == "visual":
            return "bov_i", "eov_i"
        return f"bov_i_{self.name}", f"eov_i_{self.name}"


class PrefixSpec(_Declaration):
    """The conditioning inputs, in the fixed order of Figure 3: text, visual(s), audio.

    ``visual`` is one kind (a single input named ``visual``) or a tuple of
    :class:`VisualInput`, one span each in declaration order. ``optional`` names inputs that
    may be left out: ``text``, ``audio``, ``visual`` (the single input) or a visual input's
    name (or mark the VisualInput ``optional=True``).
    """

    text: bool = False
    visual: VisualInputKind | tuple[VisualInput, ...] | None = None
    audio: bool = False
    optional: tuple[str, ...] = ()
    #: Frames of a visual/audio condition shorter than the output (frame prediction, continuation).
    condition_frames: int | None = Field(default=None, ge=1)

    @field_validator("visual")
    @classmethod
    def _visual_inputs_valid(cls, value: Any) -> Any:
        if isinstance(value, tuple):
            if not value:
                raise ValueError("an empty tuple of visual inputs: use visual=None")
            names = [v.name for v in value]
            doubles = sorted({n for n in names if names.count(n) > 1})
            if doubles:
                raise ValueError(f"visual input names must be unique, repeated: {doubles}")
        return value

    @model_validator(mode="after")
    def _optional_must_be_present(self) -> PrefixSpec:
        names = self.input_names
        for name in self.optional:
            if name not in names:
                raise ValueError(
                    f"optional input {name!r} is not one of this prefix's inputs {names}"
                )
        return self

    @property
    def visual_inputs(self) -> tuple[VisualInput, ...]:
        """The visual inputs in layout order (a single kind becomes one input named visual)."""
        if self.visual is None:
            return ()
        if isinstance(self.visual, str):
            kind = self.visual
            frames = self.condition_frames if kind in ("video", "masked_video") else None
            return (
                VisualInput(
                    name="visual", kind=kind, frames=frames, optional="visual" in self.optional
                ),
            )
        return tuple(
            v.model_copy(update={"optional": True}) if v.name in self.optional else v
            for v in self.visual
        )

    @property
    def input_names(self) -> list[str]:
        """Every input of the prefix by name: text, the visual inputs, audio."""
        names = ["text"] if self.text else []
        names += [v.name for v in self.visual_inputs]
        if isinstance(self.visual, tuple):
            names.append("visual")  # all visual inputs at once (cfg_drop)
        return names + (["audio"] if self.audio else [])

    def is_optional(self, name: str) -> bool:
        if name in ("text", "audio"):
            return name in self.optional
        return any(v.name == name and v.optional for v in self.visual_inputs)


class TargetSpec(_Declaration):
    """The generated outputs: a visual span (image or video) and/or an audio span."""

    visual: Literal["image", "video"] | None = None
    audio: bool = False

    @model_validator(mode="after")
    def _not_empty(self) -> TargetSpec:
        if self.visual is None and not self.audio:
            raise ValueError("a task must generate something: set visual and/or audio")
        return self


class TaskSpec(_Declaration):
    """A task's declaration: its token, its prefix inputs, its target outputs, its formats."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    #: Short name of the task token; the vocabulary allocates ``<task_{task_token}>``.
    task_token: str = Field(pattern=NAME_PATTERN)
    prefix: PrefixSpec = PrefixSpec()
    target: TargetSpec
    formats: tuple[Format, ...] = VIDEO_FORMATS
    #: Text-to-image leaves ``<eos>`` out so generation can run on into video (paper 4.1).
    eos: bool = True
    #: Inputs dropped in the unconditional branch of classifier-free guidance
    #: (default: the text, when the task has text).
    cfg_drop: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _default_cfg_drop(cls, data: Any) -> Any:
        if isinstance(data, dict) and "cfg_drop" not in data:
            prefix = data.get("prefix")
            has_text = (
                prefix.get("text") if isinstance(prefix, dict) else getattr(prefix, "text", False)
            )
            data = {**data, "cfg_drop": ("text",) if has_text else ()}
        return data

    @field_validator("formats")
    @classmethod
    def _formats_not_empty(cls, value: tuple[Format, ...]) -> tuple[Format, ...]:
        if not value:
            raise ValueError("a task must support at least one format")
        return value

    @model_validator(mode="after")
    def _formats_match_target(self) -> TaskSpec:
        if self.target.visual == "image" and any(not f.is_image for f in self.formats):
            raise ValueError("an image target supports only 1-frame formats")
        if self.target.visual == "video" and any(f.is_image for f in self.formats):
            raise ValueError("a video target needs formats of more than one frame")
        names = self.prefix.input_names + (["visual"] if self.prefix.visual else [])
        for name in self.cfg_drop:
            if name not in names:
                raise ValueError(f"cfg_drop names {name!r}, which is not in the prefix {names}")
        return self

    @property
    def token_name(self) -> str:
        return f"<task_{self.task_token}>"


def parse_format(text: str) -> Format:
    """``"17x128x128"`` → Format; the inverse of ``str(Format)``."""
    match = re.fullmatch(r"(\d+)x(\d+)x(\d+)", text.strip())
    if not match:
        raise ConfigError("format", text, "FRAMESxHEIGHTxWIDTH, e.g. 17x128x128")
    frames, height, width = (int(g) for g in match.groups())
    return Format(frames=frames, height=height, width=width)
