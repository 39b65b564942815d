"""Lookup-free quantization: the id layout, straight-through gradients, the exact codebook
entropy against a brute-force 2^K reference, and a peer check."""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from videopoet.core.errors import ConfigError
from videopoet.plugins.magvit.lfq import (
    LFQ,
    bits_to_ids,
    ids_to_bits,
    ids_to_codes,
    reverse_bits,
)


def test_id_layout_is_channel_k_as_bit_k():
    # channels 0 and 2 positive, 1 and 3 not: id = 2^0 + 2^2 = 5
    x = torch.tensor([0.3, -0.1, 2.0, 0.0]).view(1, 4, 1)
    codes, ids = LFQ(4).quantize(x)
    assert ids.item() == 5
    assert codes.flatten().tolist() == [1.0, -1.0, 1.0, -1.0]  # exactly 0 counts as negative


def test_ids_bits_codes_round_trip():
    ids = torch.arange(2**10)
    assert torch.equal(bits_to_ids(ids_to_bits(ids, 10), dim=-1), ids)
    codes = ids_to_codes(ids.view(1, 32, 32), 10)  # (1, 10, 32, 32) ±1
    assert codes.shape == (1, 10, 32, 32)
    assert torch.equal(LFQ(10).quantize(codes)[1], ids.view(1, 32, 32))
    assert torch.equal(reverse_bits(reverse_bits(ids, 10), 10), ids)
    assert reverse_bits(torch.tensor(1), 10).item() == 2**9


def test_straight_through_gradient_and_eval_mode():
    q = LFQ(6)
    x = torch.randn(2, 6, 3, 3, requires_grad=True)
    out = q(x)
    assert torch.equal(out.quantized.detach().abs(), torch.ones_like(x))
    out.quantized.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # identity gradient through the sign
    q.eval()
    assert q(x).per_sample_entropy.item() == 0.0


def test_entropy_mode_selection():
    exact = LFQ(18)
    assert exact.exact_entropy and exact.groups == 1 and exact.half_bits == (9, 9)
    # (2^9, 9) sub-code tables per half: never a 2^18-wide table
    assert exact.low_codes.shape == exact.high_codes.shape == (512, 9)
    assert LFQ(20).exact_entropy and LFQ(20).half_bits == (10, 10)
    # above exact_entropy_max_bits: the pre-existing grouping, an upper bound
    assert LFQ(18, exact_entropy_max_bits=16).groups == 2
    assert not LFQ(21).exact_entropy and LFQ(21).groups == 3
    assert LFQ(24).groups == 3 and LFQ(24).half_bits == (4, 4)
    # an explicit entropy_groups keeps meaning the grouped sum (MagvitConfig passes it through)
    grouped = LFQ(18, entropy_groups=2)
    assert grouped.groups == 2 and not grouped.exact_entropy
    assert LFQ(18, entropy_groups=1).exact_entropy
    x = torch.randn(2, 18, 5, 16, 16)
    per_sample, codebook = exact.entropies(x)
    assert 0 <= per_sample.item() < 18 * 0.6932
    assert 0 < codebook.item() <= 18 * 0.6932 + 1e-4


def _brute_force_codebook_entropy(x: torch.Tensor, inv_temperature: float, chunk: int = 64):
    """H(mean_n softmax_c 2τ<x_n, c>) over all 2^K codes, in float64, a few tokens at a time."""
    bits = x.shape[1]
    flat = x.double().movedim(1, -1).reshape(-1, bits)
    codes = ids_to_codes(torch.arange(2**bits), bits, torch.float64).reshape(2**bits, bits)
    total = torch.zeros(2**bits, dtype=torch.float64)
    for start in range(0, flat.shape[0], chunk):
        total += (2 * inv_temperature * flat[start : start + chunk] @ codes.T).softmax(-1).sum(0)
    prob = total / flat.shape[0]
    return -(prob * prob.clamp_min(1e-300).log()).sum()


def _correlated_latents(bits: int, tokens: int) -> torch.Tensor:
    """The high half of the bits copies the low half (plus a little noise): strongly dependent."""
    low = torch.randn(tokens, bits // 2)
    flat = torch.cat([low, low + 0.05 * torch.randn_like(low)], dim=1)
    return flat.T.reshape(1, bits, tokens)


@pytest.mark.parametrize("bits", [8, 10])
@pytest.mark.parametrize("inv_temperature", [0.3, 1.0, 10.0, 100.0])
def test_codebook_entropy_is_exact(bits, inv_temperature):
    torch.manual_seed(bits)
    random = torch.randn(3, bits, 10, 10)  # 300 tokens
    for x in (random, _correlated_latents(bits, 300)):
        reference = _brute_force_codebook_entropy(x, inv_temperature)
        # not the trivial uniform maximum, whatever the temperature
        assert reference.item() < bits * math.log(2) - 1e-3
        ours = LFQ(bits, inv_temperature=inv_temperature).entropies(x)[1]
        assert ours.dtype == torch.float32
        assert abs(ours.item() - reference.item()) < 1e-4, (ours.item(), reference.item())


@pytest.mark.parametrize("bits", [8, 10])
@pytest.mark.parametrize("inv_temperature", [1.0, 100.0])
def test_grouped_entropy_is_an_upper_bound(bits, inv_temperature):
    torch.manual_seed(1)
    grouped = LFQ(bits, inv_temperature=inv_temperature, entropy_groups=2)
    exact = LFQ(bits, inv_temperature=inv_temperature)
    random = torch.randn(3, bits, 10, 10)
    correlated = _correlated_latents(bits, 300)
    for x in (random, correlated):
        reference = _brute_force_codebook_entropy(x, inv_temperature).item()
        assert grouped.entropies(x)[1].item() >= reference - 1e-5
    # dependent halves: the sum of the two marginal entropies counts the shared bits twice
    gap = grouped.entropies(correlated)[1] - exact.entropies(correlated)[1]
    assert gap.item() > 0.5  # ~0.8 nats at τ = 1, ~3 at τ = 100 (K = 8)
    # an explicit single group is the exact entropy too
    single = LFQ(bits, inv_temperature=inv_temperature, entropy_groups=1).entropies(correlated)[1]
    torch.testing.assert_close(single, exact.entropies(correlated)[1], rtol=0, atol=1e-5)


def test_codebook_entropy_gradient_matches_brute_force():
    torch.manual_seed(2)
    bits, inv_temperature = 8, 1.0
    x = torch.randn(2, bits, 7, 9, dtype=torch.float64)
    ours = x.clone().requires_grad_(True)
    LFQ(bits, inv_temperature=inv_temperature).entropies(ours)[1].backward()
    reference = x.clone().requires_grad_(True)
    _brute_force_codebook_entropy(reference, inv_temperature).backward()
    assert reference.grad.abs().max() > 1e-3  # a non-trivial gradient to compare against
    torch.testing.assert_close(ours.grad, reference.grad, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("bits", [10, 18])
def test_entropy_loss_backward_is_finite(bits):
    # τ = 100: most soft assignments underflow to exactly 0; the clamp keeps gradients finite
    q = LFQ(bits).train()
    x = torch.randn(2, bits, 3, 8, 8, requires_grad=True)
    out = q(x)
    q.entropy_loss(out).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_entropies_ignore_bfloat16_autocast():
    # a bf16 matmul would blur the 2^K soft assignment; the entropies stay float32 throughout
    q = LFQ(10, inv_temperature=1.0).train()
    x = torch.randn(2, 10, 4, 8, 8)
    reference = q.entropies(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = q.entropies(x)
    for ours, ref in zip(under_autocast, reference, strict=True):
        assert ours.dtype == torch.float32 and torch.equal(ours, ref)


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op (forward or backward) produces."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.numel = max(self.numel, leaf.numel())
        return out


def test_exact_entropy_at_18_bits_is_memory_light_and_fast():
    torch.manual_seed(3)
    tokens, inv_temperature = 4096, 1.0
    q = LFQ(18, inv_temperature=inv_temperature).train()
    x = _correlated_latents(18, tokens).requires_grad_(True)
    q.entropies(x)  # warm-up
    start = time.perf_counter()
    with _LargestTensor() as largest:
        out = q(x)
        q.entropy_loss(out).backward()
    elapsed = time.perf_counter() - start
    # the per-token half distributions (4096 × 512) are the largest tensors; 2^18 per token
    # would be 4096 × 262,144
    assert largest.numel <= tokens * 2**9
    assert elapsed < 30.0, elapsed  # ~0.05 s on 2 CPU cores
    assert torch.isfinite(x.grad).all()
    # exact at 18 bits as well (brute force on a subset of the tokens: 256 × 2^18 in chunks)
    subset = x.detach()[..., :256]
    reference = _brute_force_codebook_entropy(subset, inv_temperature, chunk=16)
    assert abs(q.entropies(subset)[1].item() - reference.item()) < 1e-4


def test_entropy_rewards_usage_and_confidence():
    q = LFQ(4, inv_temperature=10.0)
    spread = torch.randn(4096, 4).mul(2).T.reshape(1, 4, 4096)
    collapsed = spread.abs()  # every vector on the same code
    assert q.entropies(spread)[1] > q.entropies(collapsed)[1] + 2.0
    timid = spread * 0.001
    assert q.entropies(timid)[0] > q.entropies(spread)[0] + 1.0


def test_bad_input():
    with pytest.raises(ConfigError, match="codebook_bits"):
        LFQ(0)
    with pytest.raises(ConfigError, match="entropy_groups"):
        LFQ(18, entropy_groups=4)
    with pytest.raises(ConfigError, match="entropy_groups"):
        LFQ(18, entropy_groups=0)
    with pytest.raises(ConfigError, match="exact_entropy_max_bits"):
        LFQ(18, exact_entropy_max_bits=-1)
    with pytest.raises(ConfigError, match="latent"):
        LFQ(8)(torch.randn(2, 6, 4))


@pytest.mark.parametrize("scale,inv_temperature", [(0.01, 100.0), (0.1, 10.0), (1.0, 100.0)])
def test_agrees_with_vector_quantize_pytorch(scale, inv_temperature):
    peer_module = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(0)
    bits = 8
    x = torch.randn(4, bits, 3, 5, 5) * scale
    peer = peer_module.LFQ(
        dim=bits, entropy_loss_weight=1.0, diversity_gamma=1.0, commitment_loss_weight=1.0
    ).train()
    (_, peer_ids, _), breakdown = peer(
        x, inv_temperature=inv_temperature, return_loss_breakdown=True
    )
    ours = LFQ(bits, inv_temperature=inv_temperature).train()(x)
    # the peer's channel 0 is its most significant bit; ours is the least significant
    assert torch.equal(reverse_bits(ours.ids, bits), peer_ids)
    torch.testing.assert_close(
        ours.per_sample_entropy, breakdown.per_sample_entropy, rtol=1e-3, atol=1e-3
    )
    torch.testing.assert_close(ours.codebook_entropy, breakdown.batch_entropy, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.commitment, breakdown.commitment, rtol=1e-5, atol=1e-6)


def test_bit_balance_revives_a_dead_bit_where_the_entropy_has_no_gradient():
    torch.manual_seed(0)
    x = torch.randn(64, 4, 3)
    x[:, 2] = 2.0 + x[:, 2].abs()  # bit 2 is dead: every latent far on the positive side
    lfq = LFQ(4, inv_temperature=100.0).train()
    x.requires_grad_(True)
    out = lfq(x)
    (entropy_grad,) = torch.autograd.grad(lfq.entropy_loss(out), x, retain_graph=True)
    (balance_grad,) = torch.autograd.grad(out.bit_balance, x)
    assert entropy_grad[:, 2].abs().max() < 1e-6  # saturated: nothing pulls the bit back
    assert (balance_grad[:, 2] > 0).all()  # descent lowers every latent of the dead bit
    # balanced bits cost (almost) nothing, the dead one nearly its full share
    per_bit = torch.tanh(x.detach()).mean(0).pow(2).mean(-1)
    assert per_bit[2] > 0.9 and per_bit[[0, 1, 3]].max() < 0.1
    torch.testing.assert_close(
        out.bit_balance, torch.tanh(x.detach()).transpose(0, 1).reshape(4, -1).mean(1).pow(2).mean()
    )
