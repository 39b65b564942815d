"""Lookup-free quantization (LFQ, MAGVIT-v2): every latent channel is one sign bit.

With ``K`` latent channels the implicit codebook is ``{-1, +1}^K`` (``2^K`` codes) and no
codebook is stored or looked up.

Code ids (fixed; the vocabulary and every saved token depend on it)::

    bit_k = 1 if channel k > 0 else 0            (k = 0 .. K-1; exactly 0 counts as 0)
    id    = sum_k bit_k * 2^k                     (channel 0 is the least significant bit)
    code  = 2 * bit - 1                           (the quantized latent is ±1 per channel)

``vector-quantize-pytorch``'s ``LFQ`` uses the opposite order (channel 0 is its *most*
significant bit); :func:`reverse_bits` converts between the two.

Entropy penalty (MAGVIT-v2 eq. 5). The soft assignment of a latent ``x`` to code ``c`` is
``q(c | x) ∝ exp(2 τ <x, c>)`` with ``τ`` the inverse temperature, the same softmax over
``-τ ||x - c||²`` the paper and the peer use. It factorizes over channels:
``q(c_k = +1 | x) = sigmoid(4 τ x_k)``, so

- the per-sample entropy ``E_x H(q(·|x))`` is exactly the sum of ``K`` binary entropies;
- the codebook (batch) entropy ``H(E_x q(·|x))`` does not factorize. The ``K`` bits are split
  into ``entropy_groups`` groups of consecutive channels; within a group the mean distribution
  over its ``2^(K/G)`` sub-codes is exact, and the group entropies are summed (exact for one
  group; an upper bound otherwise, because a joint entropy never exceeds the sum of its
  marginals). The default for ``K = 18`` is two groups of 9 bits: ``512``-wide per token,
  never ``2^18``.

``entropy_loss = per_sample_entropy - diversity_gamma * codebook_entropy`` (low per-sample
entropy: confident bits; high codebook entropy: every code used across the batch), and
``commitment_loss = mean((x - sg(code))²)``. Gradients pass the sign straight through.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from videopoet.core.errors import ConfigError


class LFQOutput(NamedTuple):
    quantized: torch.Tensor  # (B, K, ...) ±1 in the forward pass, straight-through in backward
    ids: torch.Tensor  # (B, ...) int64 code ids
    per_sample_entropy: torch.Tensor
    codebook_entropy: torch.Tensor
    commitment: torch.Tensor


def bits_to_ids(bits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Boolean/0-1 bits along ``dim`` (channel k = bit k) → int64 ids."""
    k = bits.shape[dim]
    weights = (2 ** torch.arange(k, device=bits.device, dtype=torch.int64)).view(
        [-1 if d == dim % bits.ndim else 1 for d in range(bits.ndim)]
    )
    return (bits.to(torch.int64) * weights).sum(dim)


def ids_to_bits(ids: torch.Tensor, bits: int) -> torch.Tensor:
    """int ids (...) → bool bits (..., K), bit k = (id >> k) & 1."""
    shifts = torch.arange(bits, device=ids.device, dtype=torch.int64)
    return (ids.to(torch.int64).unsqueeze(-1) >> shifts) & 1 == 1


def ids_to_codes(ids: torch.Tensor, bits: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """ids (B, ...) → ±1 codes (B, K, ...), the decoder's input."""
    codes = ids_to_bits(ids, bits).to(dtype) * 2 - 1
    return codes.movedim(-1, 1)


def reverse_bits(ids: torch.Tensor, bits: int) -> torch.Tensor:
    """Convert ids between this module's order and vector-quantize-pytorch's (MSB = channel 0)."""
    return bits_to_ids(ids_to_bits(ids, bits).flip(-1), dim=-1)


def _binary_entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    # H(sigmoid(l)) computed stably: log-sigmoids avoid log(0) for confident bits
    p = torch.sigmoid(logits)
    return -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits))


def _entropy(prob: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return -(prob * prob.clamp_min(eps).log()).sum(-1)


class LFQ(nn.Module):
    """Sign quantizer over the channel dimension (dim 1) of ``(B, K, ...)`` latents."""

    def __init__(
        self,
        bits: int,
        inv_temperature: float = 100.0,
        diversity_gamma: float = 1.0,
        entropy_groups: int | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= bits <= 24:
            raise ConfigError("codebook_bits", bits, "an integer in [1, 24]")
        groups = entropy_groups or next(
            g for g in range(math.ceil(bits / 10), bits + 1) if bits % g == 0
        )
        if bits % groups:
            raise ConfigError("entropy_groups", groups, f"a divisor of codebook_bits={bits}")
        self.bits, self.groups = bits, groups
        self.inv_temperature, self.diversity_gamma = inv_temperature, diversity_gamma
        group_bits = bits // groups
        # (2^g, g) table of ±1 sub-codes, sub-code id = sum_j bit_j 2^j like the full ids
        table = ids_to_codes(torch.arange(2**group_bits), group_bits)  # (2^g, g)
        self.register_buffer("group_codes", table, persistent=False)

    @property
    def codebook_size(self) -> int:
        return 2**self.bits

    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, ...) latents → (±1 codes, ids); no losses, no gradients needed."""
        positive = x > 0
        return positive.to(x.dtype) * 2 - 1, bits_to_ids(positive, dim=1)

    def entropies(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-sample entropy, codebook entropy) of latents ``x`` (B, K, ...), in nats."""
        flat = x.float().movedim(1, -1).reshape(-1, self.bits)  # (N, K)
        logits = 4 * self.inv_temperature * flat
        per_sample = _binary_entropy_from_logits(logits).sum(-1).mean()
        group_bits = self.bits // self.groups
        codebook = flat.new_zeros(())
        for g in range(self.groups):
            part = flat[:, g * group_bits : (g + 1) * group_bits]
            # softmax over the group's 2^g sub-codes of 2τ<x, c>: the group's exact marginal
            prob = (2 * self.inv_temperature * part @ self.group_codes.T).softmax(-1)
            codebook = codebook + _entropy(prob.mean(0))
        return per_sample, codebook

    def forward(self, x: torch.Tensor) -> LFQOutput:
        if x.ndim < 2 or x.shape[1] != self.bits:
            raise ConfigError("latent", tuple(x.shape), f"(B, {self.bits}, ...) latents")
        codes, ids = self.quantize(x.detach())
        quantized = x + (codes - x).detach()  # straight-through estimator
        zero = x.new_zeros((), dtype=torch.float32)
        if self.training:
            per_sample, codebook = self.entropies(x)
            commitment = F.mse_loss(x.float(), codes.float())
        else:
            per_sample = codebook = commitment = zero
        return LFQOutput(quantized, ids, per_sample, codebook, commitment)

    def entropy_loss(self, out: LFQOutput) -> torch.Tensor:
        return out.per_sample_entropy - self.diversity_gamma * out.codebook_entropy
