"""The EnCodec audio tokenizer: the ``encodec`` package's ``EncodecModel`` at 16 kHz.

Geometry (paper 3.1): 16 kHz mono in, SEANet strides 8·5·4·2 = 320 samples per latent frame
(50 Hz), a residual vector quantizer of 4 levels × 1,024 codes (2 kbps). The codes of one clip
are flattened level by level (:mod:`.patterns`), so 2.125 s → 106 frames × 4 = 424 tokens.

Framing: the causal SEANet encoder pads its input up to a whole number of frames, so 34,000
samples (2.125 s) would give ceil(106.25) = 107 frames, the last one mostly padding. The
tokenizer keeps whole frames only, as :meth:`AudioTokenizerSpec.latent_frames` does: the input
is cut to ``floor(samples / 320) * 320`` samples (34,000 → 33,920, dropping the last 5 ms), so
2.125 s maps to exactly 106 frames, and decoding returns 106 × 320 = 33,920 samples.
"""

from __future__ import annotations

import math
import os
import types
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import nn

from videopoet.core.declarations import NAME_PATTERN, AudioTokenizerSpec
from videopoet.core.errors import ConfigError
from videopoet.core.serialization import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    load_pretrained,
    load_weights,
    save_pretrained,
    wrong_kind,
)
from videopoet.plugins.encodec_audio.patterns import flatten_levels, unflatten_levels

KIND = "encodec_audio"  # written into config.json so a directory says what it holds
#: slack on the [-1, 1] range check (as the video tokenizer's): resampling overshoots slightly
RANGE_TOLERANCE = 1e-3


class EncodecConfig(BaseModel):
    """Constructor arguments of :class:`EncodecTokenizer`; saved as its ``config.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("encodec16k", pattern=NAME_PATTERN)
    sample_rate: int = Field(16_000, ge=1000)
    channels: int = Field(1, ge=1, le=2)
    #: Decoder (upsampling) order; the encoder uses them reversed. Product = hop length.
    ratios: tuple[int, ...] = (8, 5, 4, 2)
    n_filters: int = Field(32, ge=1)
    dimension: int = Field(128, ge=1)
    n_residual_layers: int = Field(1, ge=1)
    lstm: int = Field(2, ge=0)
    causal: bool = True
    norm: str = "weight_norm"
    levels: int = Field(4, ge=1)
    codebook_size: int = Field(1024, ge=2)
    #: Residual-VQ levels stored in the network; ``levels`` of them are used (the official
    #: 24 kHz checkpoint stores 32 and is used with 4 here).
    stored_levels: int | None = Field(None, ge=1)
    kmeans_iters: int = Field(50, ge=1)
    decay: float = Field(0.99, gt=0, lt=1)
    threshold_ema_dead_code: int = Field(2, ge=0)
    #: How a new network's convolutions start. ``encodec``: torch's defaults, as the package
    #: builds them; each layer shrinks the signal (gain ~1/sqrt(3)) while the biases stay, so
    #: at 50 Hz the input moves the latents by ~1 % of their offset and the decoder's output is
    #: its biases' pattern (a 400 Hz tone). ``unit_gain``: zero biases and weights of variance
    #: 1 / fan-in, so the signal keeps its scale through encoder and decoder
    #: (:func:`unit_gain_init`). Irrelevant when weights are loaded.
    init: Literal["encodec", "unit_gain"] = "encodec"

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(r < 1 for r in value):
            raise ValueError("ratios must be positive integers, e.g. [8, 5, 4, 2]")
        return value

    @field_validator("codebook_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError("EncodecModel needs a power-of-two codebook size (e.g. 1024)")
        return value

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def bandwidth_kbps(self) -> float:
        return self.levels * math.log2(self.codebook_size) * self.frame_rate / 1000

    def spec(self, **extra: Any) -> AudioTokenizerSpec:
        """The declaration matching this network (what the vocabulary and layouts need)."""
        return AudioTokenizerSpec(
            name=self.name,
            description=(
                f"EnCodec at {self.sample_rate / 1000:g} kHz, {self.frame_rate:g} Hz frames, "
                f"{self.levels} x {self.codebook_size} RVQ"
            ),
            sample_rate=self.sample_rate,
            frame_rate=self.frame_rate,
            levels=self.levels,
            codebook_size=self.codebook_size,
            **extra,
        )


def parse_config(config: dict[str, Any]) -> EncodecConfig:
    """Validate a config dict; a bad key or value is a ConfigError naming it."""
    try:
        cfg = EncodecConfig(**config)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = "network." + ".".join(str(p) for p in err["loc"])
        raise ConfigError(field, err.get("input"), err["msg"]) from None
    if cfg.stored_levels is not None and cfg.stored_levels < cfg.levels:
        raise ConfigError(
            "network.levels", cfg.levels, f"at most stored_levels={cfg.stored_levels}"
        )
    if abs(cfg.frame_rate - round(cfg.frame_rate)) > 1e-9:
        raise ConfigError(
            "network.ratios",
            list(cfg.ratios),
            f"a product dividing sample_rate={cfg.sample_rate} (whole frames per second)",
        )
    return cfg


@dataclass
class AudioForward:
    """What a training step needs from one pass."""

    reconstruction: torch.Tensor  # (B, channels, samples), same length as the (framed) input
    target: torch.Tensor  # the framed input it should match
    codes: torch.Tensor  # (B, levels, frames)
    commitment: torch.Tensor  # scalar


class EncodecTokenizer(nn.Module):
    """Waveform ↔ level-major token ids, on the ``encodec`` package's ``EncodecModel``."""

    def __init__(self, config: EncodecConfig | dict[str, Any] | None = None) -> None:
        super().__init__()
        if not isinstance(config, EncodecConfig):
            config = parse_config(dict(config or {}))
        self.config = config
        self.codec = _build_codec(config)

    # ------------------------------------------------------------------ geometry

    @property
    def spec(self) -> AudioTokenizerSpec:
        return self.config.spec()

    @property
    def levels(self) -> int:
        return self.config.levels

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def frames_for(self, samples: int) -> int:
        """Whole latent frames in ``samples`` samples (the partial last frame is dropped)."""
        frames = samples // self.hop_length
        if frames < 1:
            raise ConfigError(
                "samples", samples, f"at least one frame of {self.hop_length} samples"
            )
        return frames

    def frame(self, wav: torch.Tensor) -> torch.Tensor:
        """Check a waveform and cut it to whole frames: (B, channels, frames * hop)."""
        if not torch.is_tensor(wav) or not wav.is_floating_point():
            raise ConfigError("wav", type(wav).__name__, "a float tensor in [-1, 1]")
        if wav.dim() == 1:
            wav = wav[None, None]
        elif wav.dim() == 2:
            wav = wav[:, None]
        if wav.dim() != 3 or wav.shape[1] != self.config.channels:
            raise ConfigError(
                "wav", tuple(wav.shape), f"(batch, {self.config.channels}, samples) audio"
            )
        if not torch.isfinite(wav).all():
            raise ConfigError("wav", "non-finite samples", "finite values in [-1, 1]")
        frames = self.frames_for(wav.shape[-1])
        return wav[..., : frames * self.hop_length]

    # ------------------------------------------------------------------ tokens

    @torch.no_grad()
    def encode_codes(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, channels, samples) → codes (B, levels, frames), frames = samples // hop.

        Samples outside ``[-1, 1]`` (beyond :data:`RANGE_TOLERANCE`) are a ConfigError, as the
        video tokenizer's pixels are: the codec was fitted to audio in that range. (Training
        passes through :meth:`forward`, which leaves the data's range to the trainer.)"""
        wav = self.frame(wav)
        if wav.numel():
            lo, hi = (v.item() for v in wav.aminmax())
            if not (lo >= -1 - RANGE_TOLERANCE and hi <= 1 + RANGE_TOLERANCE):
                raise ConfigError(
                    "wav.values",
                    f"[{lo:.4g}, {hi:.4g}]",
                    "samples in [-1, 1] (scale or clip louder audio first)",
                )
        emb = self.latents(wav.to(self._device))
        codes = self.codec.quantizer.vq.encode(emb, n_q=self.levels)  # (levels, B, frames)
        return codes.transpose(0, 1).contiguous()

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, levels, frames) → waveform (B, channels, frames * hop) clamped to [-1, 1]
        (the decoder's own output can overshoot, an untrained one by ~50 %)."""
        codes = torch.as_tensor(codes, dtype=torch.long)
        if codes.dim() != 3 or codes.shape[1] != self.levels:
            raise ConfigError("codes", tuple(codes.shape), f"(batch, {self.levels}, frames)")
        size = self.config.codebook_size
        if codes.numel() and (codes.min() < 0 or codes.max() >= size):
            got = f"[{int(codes.min())}, {int(codes.max())}]"
            raise ConfigError("codes", got, f"local ids in [0, {size})")
        emb = self.codec.quantizer.vq.decode(codes.to(self._device).transpose(0, 1))
        return self.codec.decoder(emb).clamp(-1, 1)

    def latents(self, framed: torch.Tensor) -> torch.Tensor:
        """What the quantizer sees: the encoder's output (B, dimension, frames) of a framed
        waveform (:meth:`frame`)."""
        return self.codec.encoder(framed)

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """Waveform (B, 1, samples) in [-1, 1] → LongTensor (B, levels * frames), level-major
        local ids in [0, codebook_size); add each level's vocabulary offset to get token ids
        (``Layout.fill`` does)."""
        return flatten_levels(self.encode_codes(wav))

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Level-major local ids (B, levels * frames) → waveform (B, 1, frames * hop) in
        [-1, 1]."""
        return self.decode_codes(unflatten_levels(torch.as_tensor(ids), self.levels))

    # ------------------------------------------------------------------ training

    def forward(self, wav: torch.Tensor) -> AudioForward:
        """One differentiable pass; in train mode the codebooks follow their EMA updates."""
        target = self.frame(wav)
        emb = self.latents(target)
        quantized, codes, losses = self.codec.quantizer.vq(emb, n_q=self.levels)
        recon = self.codec.decoder(quantized)[..., : target.shape[-1]]
        return AudioForward(recon, target, codes.transpose(0, 1), losses.mean())

    def training_adapter(self, data: dict, loss: dict, train: Any) -> Any:
        """Hook of :mod:`videopoet.core.tokenizer_training` (``train-tokenizer``)."""
        from videopoet.plugins.encodec_audio.train import training_adapter

        return training_adapter(self, data, loss, train)

    # ------------------------------------------------------------------ files

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        config = {"kind": KIND, **self.config.model_dump(mode="json")}
        return save_pretrained(directory, self, config)

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, device: str | torch.device = "cpu"
    ) -> EncodecTokenizer:
        """Load a :meth:`save_pretrained` directory. Every problem is a :class:`ConfigError`
        naming the file: a missing, corrupt or truncated ``model.safetensors`` or
        ``config.json``, weights of another shape than the config's network, or a directory
        holding another kind of checkpoint (a video tokenizer's, a prefix LM's)."""
        directory = Path(directory)
        state, config = load_pretrained(directory, device)
        expected = f"a {KIND} audio tokenizer checkpoint"
        if config.get("kind") != KIND:
            raise wrong_kind(directory, config, expected)
        config.pop("kind")
        try:
            model = cls(config)
        except ConfigError as exc:
            path = directory / CONFIG_NAME
            raise ConfigError("path", str(path), f"{expected} config ({exc})") from None
        load_weights(
            model, state, directory / WEIGHTS_NAME, f"the weights of the network in {CONFIG_NAME}"
        )
        return model.to(device).eval()

    @property
    def _device(self) -> torch.device:
        return next(self.parameters()).device


def _build_codec(cfg: EncodecConfig) -> nn.Module:
    from encodec import EncodecModel
    from encodec import modules as m
    from encodec import quantization as qt

    common = dict(
        channels=cfg.channels,
        dimension=cfg.dimension,
        n_filters=cfg.n_filters,
        n_residual_layers=cfg.n_residual_layers,
        ratios=list(cfg.ratios),
        norm=cfg.norm,
        causal=cfg.causal,
        lstm=cfg.lstm,
    )
    with warnings.catch_warnings():
        # encodec builds its convolutions with torch's legacy weight_norm (a FutureWarning).
        warnings.simplefilter("ignore", FutureWarning)
        encoder = m.SEANetEncoder(**common)
        decoder = m.SEANetDecoder(**common)
    quantizer = qt.ResidualVectorQuantizer(
        dimension=cfg.dimension,
        n_q=cfg.stored_levels or cfg.levels,
        bins=cfg.codebook_size,
        decay=cfg.decay,
        kmeans_init=True,
        kmeans_iters=cfg.kmeans_iters,
        threshold_ema_dead_code=cfg.threshold_ema_dead_code,
    )
    codec = EncodecModel(
        encoder,
        decoder,
        quantizer,
        target_bandwidths=[cfg.bandwidth_kbps],
        sample_rate=cfg.sample_rate,
        channels=cfg.channels,
        name=cfg.name,
    )
    codec.set_target_bandwidth(cfg.bandwidth_kbps)
    if cfg.init == "unit_gain":
        unit_gain_init(codec.encoder)
        unit_gain_init(codec.decoder)
    for layer in codec.quantizer.vq.layers:
        layer._codebook.init_embed_ = types.MethodType(_init_codes, layer._codebook)
        layer._codebook.replace_ = types.MethodType(_replace_dead_codes, layer._codebook)
    return codec


@torch.no_grad()
def unit_gain_init(module: nn.Module) -> None:
    """Re-initialise every 1-D (transposed) convolution in ``module``: zero bias, weights drawn
    with variance 1 / fan-in (``in_channels * kernel``, divided by the stride for a transposed
    convolution, whose outputs each see ``kernel / stride`` taps per input channel). A signal
    then keeps its scale from layer to layer. Works with the legacy ``weight_norm`` encodec
    uses (``weight_v`` takes the draw, ``weight_g`` its norm) and without it."""
    from torch.nn.utils.weight_norm import WeightNorm

    for conv in module.modules():
        if not isinstance(conv, nn.Conv1d | nn.ConvTranspose1d):
            continue
        fan_in = conv.in_channels * conv.kernel_size[0]
        if isinstance(conv, nn.ConvTranspose1d):
            fan_in /= conv.stride[0]
        norms = [h for h in conv._forward_pre_hooks.values() if isinstance(h, WeightNorm)]
        target = conv.weight_v if norms else conv.weight
        weight = torch.randn_like(target) / math.sqrt(fan_in)
        target.copy_(weight)
        if norms:
            conv.weight_g.copy_(torch.norm_except_dim(weight, 2, norms[0].dim))
            norms[0](conv, None)  # recompute .weight now
        if conv.bias is not None:
            conv.bias.zero_()


# Two fixes to encodec 0.1.1's EMA codebooks, bound per instance (the package is not edited).
# Its EMA keeps running sums (``embed_avg``) and counts (``cluster_size``) and sets
# ``embed = embed_avg / cluster_size`` after every training step.


def _init_codes(codebook: nn.Module, data: torch.Tensor) -> None:
    """k-means initialisation whose running sums match its counts.

    encodec 0.1.1 stores the k-means *means* as ``embed_avg`` beside the cluster *counts*, so
    the first EMA step divides every code by its count: the codebook shrinks towards zero and
    one code wins every vector (we saw whole levels collapse to a single code).
    """
    from encodec import distrib
    from encodec.quantization.core_vq import kmeans

    if codebook.inited:
        return
    embed, cluster_size = kmeans(data, codebook.codebook_size, codebook.kmeans_iters)
    codebook.embed.data.copy_(embed)
    codebook.embed_avg.data.copy_(embed * cluster_size[:, None].to(embed))
    codebook.cluster_size.data.copy_(cluster_size)
    codebook.inited.data.fill_(1.0)
    distrib.broadcast_tensors(codebook.buffers())


def _replace_dead_codes(codebook: nn.Module, samples: torch.Tensor, mask: torch.Tensor) -> None:
    """Dead-code expiry that sticks.

    encodec 0.1.1 replaces only ``embed`` with fresh vectors, and the EMA update that follows
    in the same step rebuilds ``embed`` from ``embed_avg / cluster_size``, so the replacement
    is lost and unused codes stay dead. The running sums are reset too, so the new vector
    survives that update.
    """
    from encodec.quantization.core_vq import sample_vectors

    fresh = sample_vectors(samples, codebook.codebook_size)
    threshold = float(codebook.threshold_ema_dead_code)
    keep = ~mask[..., None]
    codebook.embed.data.copy_(torch.where(keep, codebook.embed, fresh))
    codebook.embed_avg.data.copy_(torch.where(keep, codebook.embed_avg, fresh * threshold))
    codebook.cluster_size.data.masked_fill_(mask, threshold)


def build_tokenizer(checkpoint: str | os.PathLike | None = None, **config: Any) -> EncodecTokenizer:
    """The plugin factory: a new tokenizer from ``config``, or one loaded from ``checkpoint``
    (a directory written by :meth:`EncodecTokenizer.save_pretrained`, or an official EnCodec
    ``.th`` file, see :mod:`.official`)."""
    if checkpoint is None:
        return EncodecTokenizer(config)
    from videopoet.plugins.encodec_audio.official import load_checkpoint

    return load_checkpoint(checkpoint, **config)
