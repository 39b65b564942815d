"""Causal 3D-convolution building blocks: nothing here lets a frame see a later frame.

Time is padded on the front only (with copies of the first frame), normalization is per frame,
and temporal up/down-sampling keeps frame 0 on its own, so latent frame ``j`` depends on input
frames ``0 .. 4j`` and nothing after.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CausalConv3d(nn.Module):
    """3D convolution padded ``kt - 1`` frames at the front (replicating frame 0)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int | tuple[int, int, int] = 3,
        stride: tuple[int, int, int] = (1, 1, 1),
    ) -> None:
        super().__init__()
        kt, kh, kw = (kernel,) * 3 if isinstance(kernel, int) else kernel
        self.time_pad = kt - 1
        self.conv = nn.Conv3d(cin, cout, (kt, kh, kw), stride=stride, padding=(0, kh // 2, kw // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_pad:
            first = x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1)
            x = torch.cat([first, x], dim=2)
        return self.conv(x)


class FrameNorm(nn.Module):
    """GroupNorm applied to every frame separately (a clip-wide norm would leak the future).

    At least 4 channels per group: with one channel per group the norm becomes an instance
    norm that strips each frame's mean colour, and narrow networks then train far slower.
    """

    def __init__(self, channels: int, max_groups: int = 32) -> None:
        super().__init__()
        wanted = max(1, min(max_groups, channels // 4))
        groups = next(g for g in range(wanted, 0, -1) if channels % g == 0)
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.norm(x.transpose(1, 2).reshape(b * t, c, h, w))
        return y.reshape(b, t, c, h, w).transpose(1, 2)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = FrameNorm(cin), CausalConv3d(cin, cout)
        self.norm2, self.conv2 = FrameNorm(cout), CausalConv3d(cout, cout)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Downsample(nn.Module):
    """×2 spatial, and ×2 temporal when ``temporal`` (1 + 2m frames → 1 + m)."""

    def __init__(self, cin: int, cout: int, temporal: bool) -> None:
        super().__init__()
        self.conv = CausalConv3d(cin, cout, 3, stride=(2 if temporal else 1, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Depth-to-space ×2 spatial and, when ``temporal``, ×2 in time minus the first frame."""

    def __init__(self, cin: int, cout: int, temporal: bool) -> None:
        super().__init__()
        self.st = 2 if temporal else 1
        self.cout = cout
        self.conv = CausalConv3d(cin, cout * self.st * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t, h, w = x.shape
        y = self.conv(x).reshape(b, self.cout, self.st, 2, 2, t, h, w)
        y = y.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, self.cout, t * self.st, h * 2, w * 2)
        # latent frame 0 stands for input frame 0 alone: keep one of its copies
        return y[:, :, self.st - 1 :]
