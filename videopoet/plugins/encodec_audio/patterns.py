"""How the codes of several RVQ levels become one token sequence (paper 3.1).

VideoPoet flattens EnCodec's codes "transposed": every frame of level 1, then every frame of
level 2, and so on (level-major), so the coarse level that carries most of the signal comes
first and each level is one contiguous block that fits its own vocabulary range.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from videopoet.core.errors import ConfigError


def flatten_levels(codes: torch.Tensor) -> torch.Tensor:
    """(B, levels, frames) codes → (B, levels * frames) ids, level-major."""
    if codes.dim() != 3:
        raise ConfigError("codes", tuple(codes.shape), "a (batch, levels, frames) tensor")
    return codes.reshape(codes.shape[0], -1)


def unflatten_levels(ids: torch.Tensor, levels: int) -> torch.Tensor:
    """(B, levels * frames) level-major ids → (B, levels, frames) codes."""
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    if ids.dim() != 2 or ids.shape[1] == 0 or ids.shape[1] % levels:
        raise ConfigError(
            "ids", tuple(ids.shape), f"a (batch, levels * frames) tensor with levels={levels}"
        )
    return ids.reshape(ids.shape[0], levels, ids.shape[1] // levels)


def level_offsets(starts: Sequence[int], frames: int) -> torch.Tensor:
    """Per-position offset (levels * frames,) that turns local ids into vocabulary ids.

    ``starts`` are the first vocabulary ids of each level, e.g.
    ``[b.start for b in vocab.codebooks_of("audio")]``.
    """
    return torch.tensor(list(starts), dtype=torch.long).repeat_interleave(frames)


def to_global(ids: torch.Tensor, starts: Sequence[int], codebook_size: int) -> torch.Tensor:
    """Local level-major ids in [0, codebook_size) → ids in each level's vocabulary range."""
    levels = len(starts)
    codes = unflatten_levels(ids, levels)
    if codes.numel() and (codes.min() < 0 or codes.max() >= codebook_size):
        raise ConfigError(
            "ids", f"[{int(codes.min())}, {int(codes.max())}]", f"local ids in [0, {codebook_size})"
        )
    return flatten_levels(codes) + level_offsets(starts, codes.shape[2]).to(ids.device)


def to_local(ids: torch.Tensor, starts: Sequence[int], codebook_size: int) -> torch.Tensor:
    """Inverse of :func:`to_global`; raises when an id lies outside its level's range."""
    levels = len(starts)
    codes = unflatten_levels(ids, levels)
    local = flatten_levels(codes) - level_offsets(starts, codes.shape[2]).to(ids.device)
    bad = (local < 0) | (local >= codebook_size)
    if bad.any():
        position = int(bad.nonzero()[0, 1])
        level = position // codes.shape[2]
        raise ConfigError(
            f"ids[{position}]",
            int(flatten_levels(codes)[bad][0]),
            f"an id of level {level}'s range [{starts[level]}, {starts[level] + codebook_size})",
        )
    return local
