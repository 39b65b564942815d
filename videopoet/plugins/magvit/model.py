"""The MAGVIT-v2-style tokenizer network: causal 3D-CNN encoder, LFQ, causal 3D-CNN decoder.

Geometry (paper 3.1): frame 0 alone → latent frame 0, then every 4 frames → one latent frame;
8× spatial. ``17×128×128 → (5, 16, 16)``, ``17×224×128 → (5, 28, 16)``, one image
``128×128 → (1, 16, 16)``, any ``1 + 4k`` frames.

Public API of :class:`MagvitTokenizer`:

- ``encode(video) -> ids``: video ``(B, 3, T, H, W)`` float in ``[-1, 1]`` → ``LongTensor
  (B, t*h*w)`` of local ids in ``[0, 2^K)``, raster order over ``(t, h, w)`` (``w`` fastest);
  id layout in :mod:`videopoet.plugins.magvit.lfq`.
- ``decode(ids, latent_shape) -> video`` in ``[-1, 1]``.
- ``latent_shape(frames, height, width)``, ``save_pretrained(dir)``, ``from_pretrained(dir)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import nn

from videopoet.core.declarations import VisualTokenizerSpec
from videopoet.core.errors import ConfigError
from videopoet.core.serialization import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    load_pretrained,
    load_weights,
    save_pretrained,
    wrong_kind,
)
from videopoet.plugins.magvit.layers import (
    CausalConv3d,
    Downsample,
    FrameNorm,
    PatchShortcut,
    ResBlock,
    Upsample,
)
from videopoet.plugins.magvit.lfq import LFQ, LFQOutput, ids_to_codes

#: slack on the [-1, 1] range check: resampling and colour conversion overshoot slightly
RANGE_TOLERANCE = 1e-3
KIND = "magvit"  #: written into config.json so a directory says what it holds
TEMPORAL_FACTOR, SPATIAL_FACTOR = 4, 8


class MagvitConfig(BaseModel):
    """The network's constructor arguments; saved as ``config.json`` beside the weights."""

    model_config = ConfigDict(extra="forbid")

    name: str = "magvit2"
    codebook_bits: int = Field(18, ge=1, le=24)
    channels: int = Field(32, ge=4, description="width of the first level")
    channel_mult: tuple[int, int, int, int] = (1, 2, 4, 4)
    num_res_blocks: int = Field(2, ge=1)
    mid_blocks: int = Field(2, ge=0)
    inv_temperature: float = Field(100.0, gt=0)
    diversity_gamma: float = Field(1.0, ge=0)
    entropy_groups: int | None = Field(None, ge=1)
    shortcut: bool = Field(True, description="linear patch path beside the deep one")

    @field_validator("channel_mult")
    @classmethod
    def _positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(m < 1 for m in value):
            raise ValueError("every channel multiplier must be >= 1")
        return value


def _widths(config: MagvitConfig) -> list[int]:
    return [config.channels * m for m in config.channel_mult]


# the 3 spatial ×2 steps give 8×; the first two also halve time (1+4k → 1+2k → 1+k)
_TEMPORAL_STEPS = (True, True, False)


class Encoder(nn.Module):
    def __init__(self, config: MagvitConfig) -> None:
        super().__init__()
        widths = _widths(config)
        self.conv_in = CausalConv3d(3, widths[0])
        blocks: list[nn.Module] = []
        cin = widths[0]
        for level, width in enumerate(widths):
            for _ in range(config.num_res_blocks):
                blocks.append(ResBlock(cin, width))
                cin = width
            if level < len(widths) - 1:
                blocks.append(Downsample(cin, cin, _TEMPORAL_STEPS[level]))
        blocks += [ResBlock(cin, cin) for _ in range(config.mid_blocks)]
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = FrameNorm(cin)
        self.conv_out = CausalConv3d(cin, config.codebook_bits, 1)
        self.shortcut = PatchShortcut(config.codebook_bits) if config.shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.conv_out(F.silu(self.norm_out(self.blocks(self.conv_in(x)))))
        return z if self.shortcut is None else z + self.shortcut.encode(x)


class Decoder(nn.Module):
    def __init__(self, config: MagvitConfig) -> None:
        super().__init__()
        widths = _widths(config)[::-1]
        cin = widths[0]
        self.conv_in = CausalConv3d(config.codebook_bits, cin)
        blocks: list[nn.Module] = [ResBlock(cin, cin) for _ in range(config.mid_blocks)]
        for level, width in enumerate(widths):
            for _ in range(config.num_res_blocks):
                blocks.append(ResBlock(cin, width))
                cin = width
            if level < len(widths) - 1:
                blocks.append(Upsample(cin, cin, _TEMPORAL_STEPS[::-1][level]))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = FrameNorm(cin)
        self.conv_out = CausalConv3d(cin, 3)
        self.shortcut = PatchShortcut(config.codebook_bits) if config.shortcut else None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_out(F.silu(self.norm_out(self.blocks(self.conv_in(z)))))
        return x if self.shortcut is None else x + self.shortcut.decode(z)


class MagvitTokenizer(nn.Module):
    """Causal video tokenizer with lookup-free quantization (see the module docstring)."""

    def __init__(self, config: MagvitConfig) -> None:
        super().__init__()
        self.config = config
        self.spec = VisualTokenizerSpec(
            name="magvit_network",
            codebook_bits=config.codebook_bits,
            temporal_factor=TEMPORAL_FACTOR,
            spatial_factor=SPATIAL_FACTOR,
        )
        self.encoder = Encoder(config)
        self.quantizer = LFQ(
            config.codebook_bits,
            inv_temperature=config.inv_temperature,
            diversity_gamma=config.diversity_gamma,
            entropy_groups=config.entropy_groups,
        )
        self.decoder = Decoder(config)

    # ------------------------------------------------------------------ geometry and checks

    @property
    def codebook_bits(self) -> int:
        return self.config.codebook_bits

    @property
    def codebook_size(self) -> int:
        return 2**self.config.codebook_bits

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.conv_in.conv.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.encoder.conv_in.conv.weight.device

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        return self.spec.latent_shape(frames, height, width)

    def check_video(self, video: torch.Tensor, field: str = "video") -> tuple[int, int, int]:
        """Validate a ``(B, 3, T, H, W)`` clip in ``[-1, 1]``; returns its latent shape."""
        if not isinstance(video, torch.Tensor) or not video.is_floating_point():
            kind = getattr(video, "dtype", type(video).__name__)
            raise ConfigError(f"{field}.dtype", str(kind), "a floating-point torch.Tensor")
        if video.ndim != 5:
            raise ConfigError(f"{field}.shape", tuple(video.shape), "(batch, 3, frames, H, W)")
        if video.shape[1] != 3:
            raise ConfigError(f"{field}.channels", video.shape[1], "3 (RGB) at dim 1")
        shape = self.latent_shape(*video.shape[2:])
        if video.numel():
            lo, hi = video.aminmax()
            lo, hi = lo.item(), hi.item()
            if not (lo >= -1 - RANGE_TOLERANCE and hi <= 1 + RANGE_TOLERANCE):
                raise ConfigError(f"{field}.values", f"[{lo:.4g}, {hi:.4g}]", "values in [-1, 1]")
        return shape

    # ------------------------------------------------------------------ forward passes

    def encode_latents(self, video: torch.Tensor) -> torch.Tensor:
        """Continuous pre-quantization latents ``(B, K, t, h, w)``."""
        self.check_video(video)
        return self.encoder(video.to(self.dtype))

    def quantize(self, latents: torch.Tensor) -> LFQOutput:
        return self.quantizer(latents)

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, LFQOutput]:
        """Training pass: (reconstruction, LFQ output with losses)."""
        out = self.quantizer(self.encode_latents(video))
        return self.decoder(out.quantized), out

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` in ``[-1, 1]`` → ``(B, t*h*w)`` int64 ids, raster order."""
        latents = self.encode_latents(video)
        _, ids = self.quantizer.quantize(latents.float())
        return ids.flatten(1)

    @torch.no_grad()
    def decode(self, ids: torch.Tensor, latent_shape: tuple[int, int, int]) -> torch.Tensor:
        """``(B, t*h*w)`` ids → ``(B, 3, 1 + 4(t-1), 8h, 8w)`` video clamped to ``[-1, 1]``."""
        codes = self.ids_to_codes(ids, latent_shape)
        return self.decoder(codes).clamp(-1, 1)

    def ids_to_codes(self, ids: torch.Tensor, latent_shape: tuple[int, int, int]) -> torch.Tensor:
        """Validated ids ``(B, t*h*w)`` → ±1 latents ``(B, K, t, h, w)`` in the model dtype."""
        shape = tuple(int(s) for s in latent_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ConfigError("latent_shape", latent_shape, "three positive ints (t, h, w)")
        if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.is_complex():
            raise ConfigError("ids.dtype", getattr(ids, "dtype", type(ids)), "an integer tensor")
        count = shape[0] * shape[1] * shape[2]
        if ids.ndim != 2 or ids.shape[1] != count:
            raise ConfigError("ids.shape", tuple(ids.shape), f"(batch, {count}) for {shape}")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.codebook_size):
            value = f"[{ids.min().item()}, {ids.max().item()}]"
            raise ConfigError("ids.values", value, f"local ids in [0, {self.codebook_size})")
        grid = ids.to(self.device).reshape(ids.shape[0], *shape)
        return ids_to_codes(grid, self.codebook_bits, self.dtype)

    # ------------------------------------------------------------------ persistence

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        # ``kind`` says what the directory holds (an audio tokenizer's says encodec_audio)
        return save_pretrained(directory, self, {"kind": KIND, **self.config_dict()})

    def config_dict(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json")

    def training_adapter(self, data: dict, loss: dict, train: Any) -> Any:
        """Hook of :mod:`videopoet.core.tokenizer_training` (``train-tokenizer``)."""
        from videopoet.plugins.magvit.train import training_adapter

        return training_adapter(self, data, loss, train)

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, device: str | torch.device = "cpu"
    ) -> MagvitTokenizer:
        """Load a :meth:`save_pretrained` directory or a training checkpoint directory.

        Every problem is a :class:`ConfigError` naming the file: a missing, corrupt or
        truncated ``model.safetensors`` or ``config.json``, weights of another shape than the
        config's network, or a directory holding another kind of checkpoint (an audio
        tokenizer's, a prefix LM's). Directories saved before ``kind`` was recorded load too.
        """
        directory = Path(directory)
        state, config = load_pretrained(directory, device)
        expected = f"a {KIND} video tokenizer checkpoint"
        kind = config.pop("kind", None)
        if kind not in (None, KIND):
            raise wrong_kind(directory, {"kind": kind, **config}, expected)
        try:
            model = build_tokenizer(**config)
        except ConfigError as exc:
            path = directory / CONFIG_NAME
            raise ConfigError("path", str(path), f"{expected} config ({exc})") from None
        # checkpoints of an adversarial run hold the tokenizer under "tokenizer." beside a critic
        if any(k.startswith("tokenizer.") for k in state):
            state = {
                k[len("tokenizer.") :]: v for k, v in state.items() if k.startswith("tokenizer.")
            }
        load_weights(
            model, state, directory / WEIGHTS_NAME, f"the weights of the network in {CONFIG_NAME}"
        )
        return model.to(device).eval()


def build_tokenizer(**config: Any) -> MagvitTokenizer:
    """Build the network from its config (``MagvitConfig`` fields); bad keys are ConfigErrors."""
    try:
        parsed = MagvitConfig(**config)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "config"
        raise ConfigError(f"network.{field}", first.get("input"), first["msg"].lower()) from exc
    return MagvitTokenizer(parsed)
