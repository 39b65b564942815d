"""Training losses of the tokenizer: reconstruction, LFQ entropy + commitment, optional GAN.

The adversarial term uses one optimizer for generator and critic: the critic's own loss is
computed on a detached reconstruction (so it trains only the critic), and the generator's
term is computed through a *detached copy of the critic's weights* (``functional_call``), so
it trains only the tokenizer. The sum is one ``loss`` for :func:`videopoet.core.training.train`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.func import functional_call


class LossConfig(BaseModel):
    """The ``loss:`` section of a tokenizer training YAML."""

    model_config = ConfigDict(extra="forbid")

    l1_weight: float = Field(0.2, ge=0)
    l2_weight: float = Field(1.0, ge=0)
    entropy_weight: float = Field(0.1, ge=0, description="MAGVIT-v2 uses 0.1")
    commitment_weight: float = Field(0.25, ge=0)
    bit_balance_weight: float = Field(
        0.0, ge=0, description="keeps every LFQ bit in use (LFQ.bit_balance); 0 disables"
    )
    adversarial_weight: float = Field(0.0, ge=0, description="0 disables the critic")
    adversarial_start: int = Field(0, ge=0, description="step from which the GAN term counts")
    critic_channels: int = Field(32, ge=4)
    object_weight: float = Field(
        0.0,
        ge=0,
        description="extra weight of the reconstruction error on (and next to) the world's "
        "main object: 0 treats every pixel alike; small objects otherwise count for little "
        "beside the background and are the first thing a tiny code loses",
    )


class FrameCritic(nn.Module):
    """PatchGAN critic over single frames: video clips are scored frame by frame."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(3, c, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 4, 2, 1),
            nn.GroupNorm(8, 2 * c),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * c, 4 * c, 4, 2, 1),
            nn.GroupNorm(8, 4 * c),
            nn.LeakyReLU(0.2),
            nn.Conv2d(4 * c, 1, 3, 1, 1),
        )

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = video.shape
        return self.net(video.transpose(1, 2).reshape(b * t, c, h, w))


class TokenizerWithCritic(nn.Module):
    """What the trainer optimizes when the GAN term is on: ``tokenizer.*`` and ``critic.*``."""

    def __init__(self, tokenizer: nn.Module, critic: FrameCritic) -> None:
        super().__init__()
        self.tokenizer, self.critic = tokenizer, critic


def psnr(reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    """Per-clip PSNR in dB of ``[-1, 1]`` videos, measured on the ``[0, 1]`` scale."""
    mse = ((reference.float() - estimate.float()) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def pixel_weights(masks: torch.Tensor, object_weight: float) -> torch.Tensor:
    """(B, T, H, W) object coverage → (B, 1, T, H, W) weights of mean 1: ``1 + object_weight``
    on the object and a 2-pixel ring around it (its edges are where the error is), 1 elsewhere."""
    b, t, h, w = masks.shape
    grown = F.max_pool2d(masks.reshape(b * t, 1, h, w).float(), 5, stride=1, padding=2)
    weights = 1.0 + object_weight * grown.reshape(b, 1, t, h, w)
    return weights / weights.mean(dim=(2, 3, 4), keepdim=True)


def tokenizer_losses(
    model: nn.Module,
    video: torch.Tensor,
    config: LossConfig,
    step: int | None = None,
    weights: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """All training terms for one batch; ``model`` is a tokenizer or a TokenizerWithCritic.
    ``weights`` (B, 1, T, H, W), mean 1 per clip: per-pixel weights of the reconstruction error."""
    tokenizer = model.tokenizer if isinstance(model, TokenizerWithCritic) else model
    recon, q = tokenizer(video)
    recon = recon.float()
    target = video.float()
    if weights is None:
        l2 = F.mse_loss(recon, target)
        l1 = F.l1_loss(recon, target)
    else:
        l2 = ((recon - target).pow(2) * weights).mean()
        l1 = ((recon - target).abs() * weights).mean()
    entropy = tokenizer.quantizer.entropy_loss(q)
    loss = (
        config.l2_weight * l2
        + config.l1_weight * l1
        + config.entropy_weight * entropy
        + config.commitment_weight * q.commitment
    )
    if config.bit_balance_weight > 0 and q.bit_balance is not None:
        loss = loss + config.bit_balance_weight * q.bit_balance
    out = {
        "l2": l2.detach(),
        "psnr": psnr(target, recon.detach().clamp(-1, 1)).mean(),
        "entropy": entropy.detach(),
        "sample_entropy": q.per_sample_entropy.detach(),
        "codebook_entropy": q.codebook_entropy.detach(),
        "commitment": q.commitment.detach(),
    }
    if q.bit_balance is not None:
        out["bit_balance"] = q.bit_balance.detach()
    if isinstance(model, TokenizerWithCritic) and config.adversarial_weight > 0:
        critic = model.critic
        real_score = critic(target)
        fake_score = critic(recon.detach())
        critic_loss = F.relu(1 - real_score).mean() + F.relu(1 + fake_score).mean()  # hinge
        frozen = {k: v.detach() for k, v in critic.named_parameters()}
        generator_adv = -functional_call(critic, frozen, (recon,)).mean()
        on = step is None or step >= config.adversarial_start
        loss = loss + critic_loss + (config.adversarial_weight * generator_adv if on else 0.0)
        out |= {"critic": critic_loss.detach(), "adversarial": generator_adv.detach()}
    out["loss"] = loss
    return out
