"""EnCodec audio tokenizer at 16 kHz, 50 Hz latent frames, 4 RVQ levels × 1,024 (paper 3.1).

This module is the plugin: it declares the tokenizer's geometry. The network lives in
submodules and is imported only when ``factory`` is called.

Two tokenizers are declared: ``encodec16k`` (the paper's geometry) and ``encodec16k_tiny``
(same rates, 2 levels × 64 codes, a ~0.7 M-parameter network) for tests and tiny end-to-end
models. The factory fills in the declared geometry (a network config naming another rate,
level count or codebook size is an error: the vocabulary is sized from the declaration).
A checkpoint given as ``checkpoint=PATH`` is loaded instead; :func:`spec_from_checkpoint`
returns the declaration of any local checkpoint, e.g. the official 24 kHz EnCodec file.
"""

from __future__ import annotations

import os
from typing import Any

from videopoet.core.declarations import AudioTokenizerSpec
from videopoet.core.errors import ConfigError
from videopoet.core.hookspecs import hookimpl

#: network defaults of the tiny declaration (the default one uses EncodecConfig's defaults);
#: ``unit_gain``: without it a new network barely sees its input and its codebooks collapse
#: (docs/audio-tokenizer.md)
TINY_NETWORK = {"n_filters": 8, "dimension": 32, "lstm": 1, "init": "unit_gain"}


def _factory(spec_name: str, defaults: dict[str, Any]) -> Any:
    def build(**config: Any) -> Any:
        from videopoet.plugins.encodec_audio.model import build_tokenizer

        spec = SPECS[spec_name]
        if config.get("checkpoint") is not None:
            return build_tokenizer(**config)
        declared = {
            "sample_rate": spec.sample_rate,
            "levels": spec.levels,
            "codebook_size": spec.codebook_size,
        }
        for key, value in declared.items():
            if config.get(key, value) != value:
                raise ConfigError(
                    f"network.{key}", config[key], f"{value} (declared by {spec_name})"
                )
        model = build_tokenizer(**{**defaults, **config, **declared, "name": spec_name})
        if model.config.frame_rate != spec.frame_rate:
            raise ConfigError(
                "network.ratios",
                list(model.config.ratios),
                f"strides giving {spec.frame_rate:g} Hz at {spec.sample_rate} Hz "
                f"(product {spec.hop_length}, declared by {spec_name})",
            )
        return model

    return build


def spec_from_checkpoint(path: str | os.PathLike, levels: int = 4) -> AudioTokenizerSpec:
    """The declaration of a local checkpoint: a directory saved by ``save_pretrained`` or the
    official EnCodec 24 kHz ``.th`` file (75 Hz, ``levels`` of its 32 RVQ levels). Its factory
    loads that checkpoint. Build ``Vocabulary(tasks, visual_spec, spec)`` to see its counts."""
    from videopoet.plugins.encodec_audio.official import spec_from_checkpoint as load

    return load(path, levels=levels)


SPEC = AudioTokenizerSpec(
    name="encodec16k",
    description="EnCodec (encodec package) at 16 kHz, 50 Hz frames, 4 x 1024 RVQ",
    sample_rate=16_000,
    frame_rate=50.0,
    levels=4,
    codebook_size=1024,
    factory=_factory("encodec16k", {}),
)

TINY_SPEC = AudioTokenizerSpec(
    name="encodec16k_tiny",
    description="tiny EnCodec for tests and tiny models: 16 kHz, 50 Hz frames, 2 x 64 RVQ",
    sample_rate=16_000,
    frame_rate=50.0,
    levels=2,
    codebook_size=64,
    factory=_factory("encodec16k_tiny", TINY_NETWORK),
)

SPECS = {SPEC.name: SPEC, TINY_SPEC.name: TINY_SPEC}


@hookimpl
def register_tokenizers() -> list[AudioTokenizerSpec]:
    return [SPEC, TINY_SPEC]
