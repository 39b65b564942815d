"""Super-resolution in token space (paper 3.3, A.3): the ``superres`` refiner plugin.

A windowed multi-axis masked transformer over the visual tokenizer's high-resolution tokens,
conditioned on the low-resolution tokens and text; trained with ``videopoet train-refiner``
(:mod:`videopoet.plugins.superres.train`), held in a bundle under ``refiners/superres/`` and run
by ``engine.refine("superres", video)`` or ``engine.generate(..., superres=True)``. See
docs/superres.md.

This module is the plugin: it declares the refiner. torch and the network are imported only
when ``factory`` is called.
"""

from __future__ import annotations

from typing import Any

from videopoet.core.declarations import RefinerSpec
from videopoet.core.hookspecs import hookimpl


def _factory(**config: Any) -> Any:
    from videopoet.plugins.superres.refiner import build

    return build(**config)


SPEC = RefinerSpec(
    name="superres",
    description="windowed multi-axis masked transformer: 2x spatial super-resolution of "
    "visual tokens, one stage or a cascade",
    factory=_factory,
)


@hookimpl
def register_refiners() -> list[RefinerSpec]:
    return [SPEC]
