"""The bundle: one directory holding everything a trained VideoPoet needs to generate.

```
bundle.json             what is in it (this module's BundleConfig)
lm/                     the prefix LM: model.safetensors, config.json, tokens.json (vocabulary)
visual_tokenizer/       model.safetensors + config.json (its "name" is a registered tokenizer)
audio_tokenizer/        the same, when the bundle has audio
refiners/NAME/          each refiner it holds (e.g. a super-resolution stage): config.json
                        (its "name" is a registered refiner) + model.safetensors
```

The text encoder is recorded by name, options and identity (its weights live in its own
package or a local folder), so a bundle built with one encoder is never silently used with
another. ``generation`` (optional) holds the sampling settings the bundle recommends
(:mod:`videopoet.core.generation_config`); a bundle without it samples with guidance off,
temperature 1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from videopoet.core.commit_fill import LEGACY_FILL, CommitFill
from videopoet.core.declarations import Format, parse_format
from videopoet.core.errors import ConfigError
from videopoet.core.generation_config import GenerationDefaults
from videopoet.core.serialization import load_json, save_json

BUNDLE_NAME = "bundle.json"
BUNDLE_VERSION = 1
LM_DIR, VISUAL_DIR, AUDIO_DIR = "lm", "visual_tokenizer", "audio_tokenizer"
REFINERS_DIR = "refiners"

#: Formats each preset is sized for: the tiny preset serves the demo format (and its image),
#: the larger ones the paper's four and the 128x128 image.
DEMO_FORMATS = ("17x64x64", "1x64x64")
PAPER_FORMATS = ("17x128x128", "17x224x128", "41x128x128", "41x224x128", "1x128x128")


class TextEncoderRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    identity: str
    dim: int = Field(ge=1)


class BundleConfig(BaseModel):
    """``bundle.json``; validated so a hand-edited file fails naming the field."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = BUNDLE_VERSION
    formats: list[str] = Field(min_length=1)
    visual_tokenizer: str | None = None
    audio_tokenizer: str | None = None
    text_encoder: TextEncoderRecord | None = None
    #: registered refiner names held under refiners/NAME/ (absent in older bundles: none)
    refiners: list[str] = Field(default_factory=list)
    description: str = ""
    #: recommended sampling settings (absent: guidance off, temperature 1, no top-k/top-p)
    generation: GenerationDefaults | None = None
    #: what hidden pixels of a masked condition become (videopoet.core.commit_fill); absent
    #: in bundles made before it existed, which were trained with grey
    commit_fill: CommitFill = LEGACY_FILL

    @field_validator("formats")
    @classmethod
    def _formats_parse(cls, value: list[str]) -> list[str]:
        return [str(parse_format(v)) for v in value]

    @property
    def format_list(self) -> list[Format]:
        return [parse_format(v) for v in self.formats]


def read_bundle_config(directory: str | os.PathLike) -> BundleConfig:
    """The validated ``bundle.json`` of ``directory``; every problem names the file."""
    path = Path(directory) / BUNDLE_NAME
    if not Path(directory).is_dir():
        raise ConfigError("checkpoint", str(directory), "a bundle directory (videopoet init DIR)")
    if not path.is_file():
        raise ConfigError("checkpoint", str(directory), f"a bundle directory holding {BUNDLE_NAME}")
    try:
        raw = load_json(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable JSON is reported by path
        raise ConfigError(str(path), "unreadable", f"valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), type(raw).__name__, "a JSON object")
    if raw.get("format_version") != BUNDLE_VERSION:
        raise ConfigError(f"{path}: format_version", raw.get("format_version"), f"{BUNDLE_VERSION}")
    try:
        return BundleConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "bundle"
        raise ConfigError(f"{path}: {field}", first.get("input"), first["msg"]) from None


def write_bundle_config(directory: Path, config: BundleConfig) -> None:
    data = config.model_dump(mode="json")
    if data.get("generation") is None:  # no section: the file an older version wrote
        data.pop("generation", None)
    save_json(directory / BUNDLE_NAME, data)
