"""Causal 3D-convolution building blocks: nothing here lets a frame see a later frame.

Time is padded on the front only (with copies of the first frame), normalization is per frame,
and temporal up/down-sampling keeps frame 0 on its own, so latent frame ``j`` depends on input
frames ``0 .. 4j`` and nothing after.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from videopoet.plugins.magvit.bf16_conv import Conv3d


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
        self.conv = Conv3d(cin, cout, (kt, kh, kw), stride=stride, padding=(0, kh // 2, kw // 2))

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
        self.skip = Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

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


class PatchShortcut(nn.Module):
    """A linear map between a causal space-time patch and its latent vector.

    ``encode``: the 4 frames × 8 × 8 pixels under a latent position (frame 0 padded with
    copies of itself, as the convolutions do) → ``K`` channels. ``decode``: ``K`` channels →
    those pixels. Added beside the deep paths, it gives the network a linear autoencoder to
    start from, which learns in a few hundred steps what the deep path alone takes thousands
    to find (the residual-autoencoding idea of DC-AE, Chen et al. 2024).
    """

    def __init__(self, latent: int, temporal: int = 4, spatial: int = 8, channels: int = 3):
        super().__init__()
        self.t, self.s, self.c = temporal, spatial, channels
        width = channels * temporal * spatial * spatial
        self.down = Conv3d(width, latent, 1)
        self.up = Conv3d(latent, width, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        b, c, frames, h, w = x.shape
        t, s = self.t, self.s
        x = torch.cat([x[:, :, :1].expand(-1, -1, t - 1, -1, -1), x], dim=2)
        n = x.shape[2] // t
        x = x.reshape(b, c, n, t, h // s, s, w // s, s)
        x = x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, c * t * s * s, n, h // s, w // s)
        return self.down(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        b, _, n, h, w = z.shape
        t, s, c = self.t, self.s, self.c
        y = self.up(z).reshape(b, c, t, s, s, n, h, w)
        y = y.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, c, n * t, h * s, w * s)
        return y[:, :, t - 1 :]  # latent frame 0 stands for frame 0 alone
