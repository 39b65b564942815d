"""Pictures the gallery shows beside the media: filmstrips, masked inputs, structure clips.

Every function takes and returns clips ``(3, T, H, W)`` in ``[-1, 1]`` (the engine's layout) or
an image ``(3, H, W)``; nothing here reads or writes files.
"""

from __future__ import annotations

import torch

#: grey of an empty filmstrip cell and of the gaps between cells (in [-1, 1])
EMPTY, GAP = -0.75, -0.25
#: a filmstrip wider than this many pixels shows every other frame (and so on)
MAX_STRIP_WIDTH = 1600


def _columns(frames: int, width: int) -> list[int]:
    step = 1
    while (frames + step - 1) // step * (width + 2) > MAX_STRIP_WIDTH:
        step += 1
    return list(range(0, frames, step))


def grid(rows: list[list[torch.Tensor | None]], gap: int = 2) -> torch.Tensor:
    """Frames (3, H, W) laid out in rows with ``gap`` pixels between them; ``None`` cells
    are empty (grey). Every frame has the size of the first one given."""
    first = next(cell for row in rows for cell in row if cell is not None)
    _, height, width = first.shape
    columns = max(len(row) for row in rows)
    out = torch.full(
        (3, len(rows) * (height + gap) + gap, columns * (width + gap) + gap), GAP, dtype=first.dtype
    )
    for r, row in enumerate(rows):
        for c in range(columns):
            cell = row[c] if c < len(row) else None
            top, left = gap + r * (height + gap), gap + c * (width + gap)
            area = out[:, top : top + height, left : left + width]
            area.copy_(cell.clamp(-1, 1) if cell is not None else torch.full_like(area, EMPTY))
    return out


def filmstrip(snapshots: list[torch.Tensor], frames: int) -> torch.Tensor:
    """The progressive preview as one image: row ``k`` shows the frames decoded after the
    ``k``-th latent frame of ``snapshots`` (each (3, t_k, H, W)), grey where none is yet."""
    _, _, height, width = snapshots[-1].shape
    keep = _columns(frames, width)
    rows = [[snap[:, t] if t < snap.shape[1] else None for t in keep] for snap in snapshots]
    return grid(rows)


def frame_strip(video: torch.Tensor, frames: int | None = None) -> torch.Tensor:
    """The first ``frames`` frames of a clip side by side (all of them by default)."""
    count = video.shape[1] if frames is None else min(frames, video.shape[1])
    return grid([[video[:, t] for t in _columns(count, video.shape[3])]])


def masked_view(video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What a COMMIT-masked input looks like: hidden pixels (mask True, (T, H, W)) in grey."""
    hidden = mask.bool()[None].expand_as(video)
    return torch.where(hidden, torch.full_like(video, EMPTY), video)


def structure_view(structure: torch.Tensor) -> torch.Tensor:
    """A stylization structure clip (flow x, flow y, depth) shown as colour: red and green
    are the flow's two axes, blue is depth (near is bright)."""
    flow_x, flow_y, depth = structure.clamp(-1, 1).unbind(0)
    return torch.stack([flow_x, flow_y, -depth])


def recolor(video: torch.Tensor, coverage: torch.Tensor, old: tuple, new: tuple) -> torch.Tensor:
    """The clip with its main object's colour ``old`` replaced by ``new`` (RGB in [0, 1]),
    exactly: the world paints ``pixel = canvas (1 - a) + colour a`` with coverage ``a``."""
    shift = (torch.tensor(new) - torch.tensor(old)) * 2  # in [-1, 1] units
    return (video + coverage[None] * shift[:, None, None, None]).clamp(-1, 1)
