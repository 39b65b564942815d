"""Lookup-free quantization: the id layout, straight-through gradients, and a peer check."""

from __future__ import annotations

import pytest
import torch

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


def test_entropy_is_memory_light_at_18_bits():
    q = LFQ(18)
    assert q.groups == 2 and q.group_codes.shape == (512, 9)  # never a 2^18-wide tensor
    x = torch.randn(2, 18, 5, 16, 16)
    per_sample, codebook = q.entropies(x)
    assert 0 <= per_sample.item() < 18 * 0.6932
    assert 0 < codebook.item() <= 18 * 0.6932 + 1e-4


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
