"""MAGVIT-v2-style causal video tokenizer with lookup-free quantization (paper 3.1).

This module is the plugin: it declares the tokenizer's geometry. The network lives in
submodules and is imported only when ``factory`` is called.
"""

from __future__ import annotations

from typing import Any

from videopoet.core.declarations import VisualTokenizerSpec
from videopoet.core.hookspecs import hookimpl


def _build(**config: Any) -> Any:
    from videopoet.plugins.magvit.model import build_tokenizer

    return build_tokenizer(**config)


SPEC = VisualTokenizerSpec(
    name="magvit2",
    description="MAGVIT-v2-style causal 3D-CNN tokenizer, LFQ with 2^18 codes",
    codebook_bits=18,
    temporal_factor=4,
    spatial_factor=8,
    factory=_build,
)


@hookimpl
def register_tokenizers() -> list[VisualTokenizerSpec]:
    return [SPEC]
