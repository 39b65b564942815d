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
- the codebook (batch) entropy ``H(E_x q(·|x))`` does not factorize over bits, but each token's
  distribution does. Split the ``K`` bits into a low half ``A`` (channels ``0 .. K//2 - 1``) and
  a high half ``B``; then ``q(a, b | x_n) = qA_n(a) qB_n(b)``, where ``qA_n`` (``N × 2^|A|``) is
  the softmax of ``2 τ <x_A, c_A>`` over the half's sub-codes, and the batch mean is the
  ``2^|A| × 2^|B|`` matrix ``QA.T @ QB / N``. Its entropy is the **exact** codebook entropy
  over all ``2^K`` codes, at the cost of one ``2^K``-entry matrix for the whole batch (262,144
  entries for ``K = 18``), never a ``2^K``-wide tensor per token. This is the default for
  ``K <= exact_entropy_max_bits`` (20).
- above ``exact_entropy_max_bits`` (up to 24 bits), or when ``entropy_groups`` is given, the
  bits are split into ``G`` groups of consecutive channels, each group's entropy is computed
  exactly as above, and the ``G`` group entropies are summed. That is an **upper bound** on
  the codebook entropy (a joint entropy never exceeds the sum of its marginals), equal to it
  only when the groups are independent across the batch; ``entropy_groups=1`` is exact.

Without an explicit ``entropy_groups`` above ``exact_entropy_max_bits``, ``G`` is the smallest
divisor of ``K`` with groups of at most 10 bits (21 → 3 × 7, 24 → 3 × 8), the grouping used
before the exact path existed, so those values are unchanged.

The entropies are computed in float32 with autocast disabled, and probabilities are clamped
(``p >= 1e-20``) before the log so that codes no token reaches keep finite gradients.

``entropy_loss = per_sample_entropy - diversity_gamma * codebook_entropy`` (low per-sample
entropy: confident bits; high codebook entropy: every code used across the batch), and
``commitment_loss = mean((x - sg(code))²)``. Gradients pass the sign straight through.
"""

from __future__ import annotations

import contextlib
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
    #: mean over bits of (batch mean of tanh(latent))²: 0 when every bit is +1 as often as
    #: -1, 1 for a dead bit; unlike the entropy terms its gradient does not vanish for a bit
    #: whose latents all sit far from 0 (see :meth:`LFQ.bit_balance`)
    bit_balance: torch.Tensor | None = None


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


#: probabilities are clamped to this before the log: ``p log p`` keeps a finite gradient where a
#: softmax underflowed to 0, and the bias (at most ``eps / e`` per entry) stays negligible even
#: over 2^20 entries (a larger eps such as 1e-8 could shift a 2^20-entry entropy by ~4e-3)
_ENTROPY_EPS = 1e-20


def _entropy(prob: torch.Tensor, eps: float = _ENTROPY_EPS) -> torch.Tensor:
    """Entropy in nats of the distribution(s) along the last dim."""
    return -(prob * prob.clamp_min(eps).log()).sum(-1)


def _sub_code_probs(
    part: torch.Tensor, table: torch.Tensor, inv_temperature: float
) -> torch.Tensor:
    """(N, g) latents → (N, 2^g) softmax of ``2 τ <x, c>`` over the ``2^g`` ±1 sub-codes."""
    return (2 * inv_temperature * part @ table.T).softmax(-1)


def _float32(device: torch.device) -> contextlib.AbstractContextManager:
    """Disable autocast (a bf16 matmul would blur the soft assignment) where it exists."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


class LFQ(nn.Module):
    """Sign quantizer over the channel dimension (dim 1) of ``(B, K, ...)`` latents.

    ``entropy_groups=None`` (default): the codebook entropy is exact for
    ``bits <= exact_entropy_max_bits`` (one group of all ``K`` bits, via the two-half
    factorization); above that the bits are split into the fewest groups of at most 10
    consecutive bits that divide ``K`` and the summed group entropies are an upper bound.
    An explicit ``entropy_groups`` always selects that grouped sum (an upper bound unless 1).
    """

    def __init__(
        self,
        bits: int,
        inv_temperature: float = 100.0,
        diversity_gamma: float = 1.0,
        entropy_groups: int | None = None,
        exact_entropy_max_bits: int = 20,
    ) -> None:
        super().__init__()
        if not 1 <= bits <= 24:
            raise ConfigError("codebook_bits", bits, "an integer in [1, 24]")
        if exact_entropy_max_bits < 0:
            raise ConfigError("exact_entropy_max_bits", exact_entropy_max_bits, "an integer >= 0")
        if entropy_groups is not None and entropy_groups < 1:
            raise ConfigError(
                "entropy_groups", entropy_groups, f"a divisor of codebook_bits={bits}"
            )
        if entropy_groups is None and bits <= exact_entropy_max_bits:
            groups = 1  # exact
        else:
            groups = entropy_groups or next(
                g for g in range(math.ceil(bits / 10), bits + 1) if bits % g == 0
            )
        if bits % groups:
            raise ConfigError("entropy_groups", groups, f"a divisor of codebook_bits={bits}")
        self.bits, self.groups = bits, groups
        self.exact_entropy_max_bits = exact_entropy_max_bits
        self.inv_temperature, self.diversity_gamma = inv_temperature, diversity_gamma
        group_bits = bits // groups
        # each group is split in a low and a high half; (2^h, h) tables of ±1 sub-codes with
        # sub-code id = sum_j bit_j 2^j like the full ids (a 0-bit half is the (1, 0) table)
        low = group_bits // 2
        self.half_bits = (low, group_bits - low)
        for name, h in zip(("low_codes", "high_codes"), self.half_bits, strict=True):
            table = ids_to_codes(torch.arange(2**h), h).reshape(2**h, h)
            self.register_buffer(name, table, persistent=False)

    @property
    def exact_entropy(self) -> bool:
        """Whether ``codebook_entropy`` is exact (one group) rather than an upper bound."""
        return self.groups == 1

    @property
    def codebook_size(self) -> int:
        return 2**self.bits

    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, ...) latents → (±1 codes, ids); no losses, no gradients needed."""
        positive = x > 0
        return positive.to(x.dtype) * 2 - 1, bits_to_ids(positive, dim=1)

    def entropies(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-sample entropy, codebook entropy) of latents ``x`` (B, K, ...), in nats.

        The codebook entropy is exact when :attr:`exact_entropy`, else the sum of the
        ``groups`` group entropies (an upper bound); see the module docstring.
        """
        with _float32(x.device):
            flat = x.float().movedim(1, -1).reshape(-1, self.bits)  # (N, K)
            logits = 4 * self.inv_temperature * flat
            per_sample = _binary_entropy_from_logits(logits).sum(-1).mean()
            group_bits = self.bits // self.groups
            codebook = flat.new_zeros(())
            for g in range(self.groups):
                part = flat[:, g * group_bits : (g + 1) * group_bits]
                codebook = codebook + _entropy(self._group_distribution(part).flatten())
        return per_sample, codebook

    def _group_distribution(self, part: torch.Tensor) -> torch.Tensor:
        """(N, g) float32 latents of one group → (2^high, 2^low) batch-mean distribution.

        Entry ``[b, a]`` is the mean soft assignment of sub-code ``a + 2^low b`` (the low half
        holds the group's least significant bits): ``QB.T @ QA / N`` with ``QA, QB`` the
        per-token half distributions, exact because each token's distribution factorizes.
        """
        low = self.half_bits[0]
        prob_low = _sub_code_probs(part[:, :low], self.low_codes, self.inv_temperature)
        prob_high = _sub_code_probs(part[:, low:], self.high_codes, self.inv_temperature)
        return prob_high.T @ prob_low / part.shape[0]

    def forward(self, x: torch.Tensor) -> LFQOutput:
        if x.ndim < 2 or x.shape[1] != self.bits:
            raise ConfigError("latent", tuple(x.shape), f"(B, {self.bits}, ...) latents")
        codes, ids = self.quantize(x.detach())
        quantized = x + (codes - x).detach()  # straight-through estimator
        zero = x.new_zeros((), dtype=torch.float32)
        if self.training:
            per_sample, codebook = self.entropies(x)
            commitment = F.mse_loss(x.float(), codes.float())
            balance = self.bit_balance(x)
        else:
            per_sample = codebook = commitment = balance = zero
        return LFQOutput(quantized, ids, per_sample, codebook, commitment, balance)

    def bit_balance(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over the ``K`` bits of ``(E_n tanh(x_nk))²`` for latents ``x`` (B, K, ...).

        At inverse temperature τ the entropy terms see a bit through ``sigmoid(4 τ x)``, which
        is flat once every latent of that bit is far from 0: such a bit is dead (one value
        for every token) and nothing pulls it back. ``tanh`` of the raw latent keeps a
        gradient there, pushing the bit's latents toward the other sign until it is used.
        """
        with _float32(x.device):
            flat = x.float().movedim(1, -1).reshape(-1, self.bits)
            return torch.tanh(flat).mean(0).pow(2).mean()

    def entropy_loss(self, out: LFQOutput) -> torch.Tensor:
        return out.per_sample_entropy - self.diversity_gamma * out.codebook_entropy
