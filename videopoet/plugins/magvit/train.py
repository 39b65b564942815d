"""Training adapter of the MAGVIT tokenizer for :mod:`videopoet.core.tokenizer_training`.

The data is the built-in synthetic world (:mod:`videopoet.data.world`). Images and videos are
trained jointly: each step draws either a batch of 1-frame clips (``data.image_fraction`` of
the steps) or a batch of ``data.frames``-frame clips, chosen by the step number so a resumed
run sees the same batches. ``data.sizes`` adds frame sizes taken in turn with
``data.height`` × ``data.width`` (step ``s`` uses size ``s mod (1 + len(sizes))``, 0 being
the main one): a tokenizer that must also decode the larger frames of a super-resolution stage
learns them without forgetting its own. Held-out evaluation (world indices from
``EVAL_OFFSET``) reports PSNR (``psnr_HxW`` at each further size), the PSNR of the trivial
baseline (every pixel its frame's mean colour), codebook usage (share of the ``2^K`` codes
seen), the perplexity of the used ids and the per-bit entropy (the lowest and the mean over
the ``K`` bits, in bits: 1 is a fair coin, 0 a dead bit).
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from videopoet.core.errors import ConfigError
from videopoet.core.tokenizer_training import validate_section
from videopoet.core.training import TrainConfig
from videopoet.data.world import EVAL_OFFSET, WorldConfig, make_batch, sample
from videopoet.plugins.magvit.losses import (
    FrameCritic,
    LossConfig,
    TokenizerWithCritic,
    pixel_weights,
    psnr,
    tokenizer_losses,
)

DATASETS = ("world",)


class MagvitDataConfig(WorldConfig):
    """The ``data:`` section: the world's settings plus the clip format and the eval set."""

    frames: int = Field(5, ge=1)
    height: int = Field(64, ge=8)
    width: int = Field(64, ge=8)
    image_fraction: float = Field(0.25, ge=0, le=1, description="share of 1-frame batches")
    eval_clips: int = Field(16, ge=1)
    sizes: list[tuple[int, int]] = Field(
        default_factory=list, description="further (height, width) formats, taken in turn"
    )

    def all_sizes(self) -> list[tuple[int, int]]:
        return [(self.height, self.width), *self.sizes]

    def world(self) -> WorldConfig:
        return WorldConfig(**self.model_dump(include=set(WorldConfig.model_fields)))


def codebook_stats(ids: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Usage (share of codes seen) and perplexity (exp of the id histogram's entropy)."""
    flat = ids.flatten().cpu()
    counts = torch.bincount(flat, minlength=codebook_size).float()
    prob = counts / counts.sum()
    nz = prob[prob > 0]
    bits = codebook_size.bit_length() - 1
    ones = ((flat.unsqueeze(-1) >> torch.arange(bits)) & 1).double().mean(0).clamp(1e-12, 1 - 1e-12)
    bit_entropy = -(ones * ones.log2() + (1 - ones) * (1 - ones).log2())
    return {
        "codebook_usage": float((counts > 0).float().mean()),
        "codes_used": float((counts > 0).sum()),
        "perplexity": float(torch.exp(-(nz * nz.log()).sum())),
        "bit_entropy_min": float(bit_entropy.min()),
        "bit_entropy_mean": float(bit_entropy.mean()),
    }


class MagvitTrainingAdapter:
    def __init__(self, tokenizer: Any, data: dict, loss: dict, train: TrainConfig) -> None:
        self.data = validate_section(MagvitDataConfig, data, "data")
        if self.data.dataset not in DATASETS:
            raise ConfigError("data.dataset", self.data.dataset, f"one of {', '.join(DATASETS)}")
        for i, (height, width) in enumerate(self.data.all_sizes()):
            try:
                tokenizer.latent_shape(self.data.frames, height, width)
            except ConfigError as exc:  # name the YAML path the user has to fix
                field = f"data.sizes.{i - 1}" if i else f"data.{exc.field}"
                raise ConfigError(field, exc.value, exc.expected) from exc
        self.loss = validate_section(LossConfig, loss, "loss")
        self.train_config = train
        self.tokenizer = tokenizer
        if self.loss.adversarial_weight > 0:
            self.model = TokenizerWithCritic(tokenizer, FrameCritic(self.loss.critic_channels))
        else:
            self.model = tokenizer
        self.model_config = tokenizer.config_dict()
        self._eval_videos: dict[tuple[int, int], torch.Tensor] = {}

    def batches(self, step: int, micro: int = 0) -> dict[str, Any]:
        d = self.data
        draw = step * self.train_config.grad_accum + micro  # micro-batch of train.grad_accum
        rng = random.Random(d.seed * 7919 + draw)
        image = rng.random() < d.image_fraction
        n = self.train_config.batch_size
        indices = [draw * n + i for i in range(n)]
        frames = 1 if image else d.frames
        sizes = d.all_sizes()
        height, width = sizes[draw % len(sizes)]
        if self.loss.object_weight == 0:
            return {
                "video": make_batch(indices, frames, height, width, d.world()),
                "step": step,
            }
        items = [sample(i, frames, height, width, d.world()) for i in indices]
        masks = torch.stack([item.masks for item in items])
        return {
            "video": torch.stack([item.video for item in items]),
            "weights": pixel_weights(masks, self.loss.object_weight),
            "step": step,
        }

    def loss_fn(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return tokenizer_losses(
            model, batch["video"], self.loss, batch.get("step"), batch.get("weights")
        )

    def eval_videos(self, size: tuple[int, int] | None = None) -> torch.Tensor:
        d = self.data
        size = size or (d.height, d.width)
        if size not in self._eval_videos:
            indices = [EVAL_OFFSET + i for i in range(d.eval_clips)]
            self._eval_videos[size] = make_batch(indices, d.frames, *size, d.world())
        return self._eval_videos[size]

    def eval_fn(self, model: torch.nn.Module) -> dict[str, float]:
        """:func:`evaluate` at the main size; at each further size its PSNR as ``psnr_HxW``."""
        tokenizer = model.tokenizer if isinstance(model, TokenizerWithCritic) else model
        n = self.train_config.batch_size
        figures = evaluate(tokenizer, self.eval_videos(), batch_size=n)
        for height, width in self.data.sizes:
            other = evaluate(tokenizer, self.eval_videos((height, width)), batch_size=n)
            figures[f"psnr_{height}x{width}"] = other["psnr"]
        return figures

    def finish(self, model: torch.nn.Module, out_dir: Path) -> dict[str, Any]:
        tokenizer = model.tokenizer if isinstance(model, TokenizerWithCritic) else model
        path = tokenizer.save_pretrained(Path(out_dir) / "tokenizer")
        return {"tokenizer_dir": str(path)}


@torch.no_grad()
def evaluate(tokenizer: Any, videos: torch.Tensor, batch_size: int = 8) -> dict[str, float]:
    """Held-out figures: PSNR through encode → decode, baseline PSNR (each frame its mean
    colour), codebook statistics."""
    was_training = tokenizer.training
    tokenizer.eval()
    device = tokenizer.device
    scores, baseline, all_ids = [], [], []
    shape = tokenizer.latent_shape(*videos.shape[2:])
    for start in range(0, videos.shape[0], batch_size):
        chunk = videos[start : start + batch_size].to(device)
        ids = tokenizer.encode(chunk)
        recon = tokenizer.decode(ids, shape)
        scores.append(psnr(chunk, recon))
        mean = chunk.float().mean(dim=(3, 4), keepdim=True).expand_as(chunk)
        baseline.append(psnr(chunk, mean))
        all_ids.append(ids)
    tokenizer.train(was_training)
    value = torch.cat(scores).mean().item()
    return {
        "psnr": value if math.isfinite(value) else 100.0,
        "baseline_psnr": torch.cat(baseline).mean().item(),
        **codebook_stats(torch.cat(all_ids), tokenizer.codebook_size),
    }


def training_adapter(tokenizer: Any, data: dict, loss: dict, train: TrainConfig) -> Any:
    return MagvitTrainingAdapter(tokenizer, data, loss, train)
