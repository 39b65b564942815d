"""Cutting a token grid into local windows and putting it back together.

A grid of features ``(B, T, H, W, C)`` and a window ``(wt, wh, ww)`` that divides it give
``(B * nt * nh * nw, wt * wh * ww, C)``: one row per window, the windows in raster order of
their position ``(nt, nh, nw)`` in the grid, the tokens of a window in raster order inside it.
:func:`merge` is the exact inverse. Attention run on the rows of :func:`partition` is local to
each window: that is what keeps the memory of the super-resolution transformer linear in the
number of tokens (paper 3.3).

Two grids tiled with the same *number* of windows along each axis (a high-resolution grid and
its low-resolution twin with windows of ``1 / scale`` the spatial size) give rows that line up:
row ``i`` of one covers the same region of the video as row ``i`` of the other. The windowed
cross-attention to the low-resolution tokens relies on this.
"""

from __future__ import annotations

import torch

from videopoet.core.errors import ConfigError


def counts(grid: tuple[int, int, int], window: tuple[int, int, int]) -> tuple[int, int, int]:
    """Windows along each axis; a window that does not divide the grid is a ConfigError."""
    out = []
    for side, g, w in zip("thw", grid, window, strict=True):
        if w < 1 or g % w:
            raise ConfigError(
                "window", tuple(window), f"sides dividing the grid {tuple(grid)} ({side}: {g})"
            )
        out.append(g // w)
    return tuple(out)


def partition(x: torch.Tensor, window: tuple[int, int, int]) -> torch.Tensor:
    """``(B, T, H, W, C)`` → ``(B · windows, tokens per window, C)``."""
    b, t, h, w, c = x.shape
    nt, nh, nw = counts((t, h, w), window)
    wt, wh, ww = window
    x = x.reshape(b, nt, wt, nh, wh, nw, ww, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(b * nt * nh * nw, wt * wh * ww, c)


def merge(
    rows: torch.Tensor, grid: tuple[int, int, int], window: tuple[int, int, int]
) -> torch.Tensor:
    """The inverse of :func:`partition`: ``(B · windows, tokens, C)`` → ``(B, T, H, W, C)``."""
    nt, nh, nw = counts(grid, window)
    wt, wh, ww = window
    c = rows.shape[-1]
    b = rows.shape[0] // (nt * nh * nw)
    x = rows.reshape(b, nt, nh, nw, wt, wh, ww, c).permute(0, 1, 4, 2, 5, 3, 6, 7)
    return x.reshape(b, nt * wt, nh * wh, nw * ww, c)


def window_index(grid: tuple[int, int, int], window: tuple[int, int, int]) -> torch.Tensor:
    """``(T, H, W)`` long tensor: the row of :func:`partition` each grid position lands in."""
    nt, nh, nw = counts(grid, window)
    t = torch.arange(grid[0]) // window[0]
    h = torch.arange(grid[1]) // window[1]
    w = torch.arange(grid[2]) // window[2]
    return (t[:, None, None] * nh + h[None, :, None]) * nw + w[None, None, :]
