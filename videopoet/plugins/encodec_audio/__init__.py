"""EnCodec audio tokenizer at 16 kHz, 50 Hz latent frames, 4 RVQ levels × 1,024 (paper 3.1).

This module is the plugin: it declares the tokenizer's geometry. The network lives in
submodules and is imported only when ``factory`` is called.
"""

from __future__ import annotations

from typing import Any

from videopoet.core.declarations import AudioTokenizerSpec
from videopoet.core.hookspecs import hookimpl


def _build(**config: Any) -> Any:
    from videopoet.plugins.encodec_audio.model import build_tokenizer

    return build_tokenizer(**config)


SPEC = AudioTokenizerSpec(
    name="encodec16k",
    description="EnCodec (encodec package) at 16 kHz, 50 Hz frames, 4 x 1024 RVQ",
    sample_rate=16_000,
    frame_rate=50.0,
    levels=4,
    codebook_size=1024,
    factory=_build,
)


@hookimpl
def register_tokenizers() -> list[AudioTokenizerSpec]:
    return [SPEC]
