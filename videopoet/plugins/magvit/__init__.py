"""MAGVIT-v2-style causal video tokenizer with lookup-free quantization (paper 3.1).

This module is the plugin: it declares the tokenizer's geometry. The network lives in
submodules and is imported only when ``factory`` is called.

Two tokenizers are declared: ``magvit2`` (the paper's 2^18 codes, an ~18 M-parameter network
that still runs on a CPU) and ``magvit2_tiny`` (2^10 codes, a network of ~0.8 M parameters
by default, ~3.2 M as trained on the world) for tests and tiny end-to-end models. Ten bits,
not eight: an 8×8 patch of the world at 64×64 usually holds an edge of the main object, so its
code must carry the object's colour (3 bits of the palette) and the edge's place and motion;
8 bits left the decoder guessing the colour (see docs/tokenizers.md).

The factory fills in the network's ``codebook_bits`` from the declaration (a config that names
other bits is an error: the vocabulary is sized from it) and the spec's name, so a saved
network records which declaration it belongs to.
"""

from __future__ import annotations

from typing import Any

from videopoet.core.declarations import VisualTokenizerSpec
from videopoet.core.errors import ConfigError
from videopoet.core.hookspecs import hookimpl

#: network defaults of the tiny declaration (the default one uses MagvitConfig's defaults)
TINY_NETWORK = {"channels": 8, "channel_mult": (1, 2, 4, 4), "num_res_blocks": 1, "mid_blocks": 1}


def _factory(spec_name: str, bits: int, defaults: dict[str, Any]) -> Any:
    def build(**config: Any) -> Any:
        from videopoet.plugins.magvit.model import build_tokenizer

        given = config.get("codebook_bits", bits)
        if given != bits:
            raise ConfigError("network.codebook_bits", given, f"{bits} (declared by {spec_name})")
        return build_tokenizer(**{**defaults, **config, "codebook_bits": bits, "name": spec_name})

    return build


SPEC = VisualTokenizerSpec(
    name="magvit2",
    description="MAGVIT-v2-style causal 3D-CNN tokenizer, LFQ with 2^18 codes",
    codebook_bits=18,
    temporal_factor=4,
    spatial_factor=8,
    factory=_factory("magvit2", 18, {}),
)

TINY_SPEC = VisualTokenizerSpec(
    name="magvit2_tiny",
    description="tiny MAGVIT-v2-style tokenizer for tests and tiny models, LFQ with 2^10 codes",
    codebook_bits=10,
    temporal_factor=4,
    spatial_factor=8,
    factory=_factory("magvit2_tiny", 10, TINY_NETWORK),
)


@hookimpl
def register_tokenizers() -> list[VisualTokenizerSpec]:
    return [SPEC, TINY_SPEC]
