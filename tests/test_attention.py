"""Attention backends: agreement, the prefix-LM pattern, fallbacks."""

from __future__ import annotations

import logging
import types

import pytest
import torch
import torch.nn.functional as F

from videopoet.core import attention
from videopoet.core.attention import attend, prefix_lm_mask, resolve_backend
from videopoet.core.errors import ConfigError
from videopoet.core.model import ModelConfig, PrefixLM

TOL = 1e-5  # float32, same math in another order


pytestmark = pytest.mark.usefixtures("one_thread")


def _qkv(batch=2, heads=3, length=37, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, length, dim, generator=g) for _ in range(3)]


def test_mask_is_prefix_bidirectional_and_target_causal():
    mask = prefix_lm_mask(6, 3)[0, 0]
    expected = torch.tensor(
        [
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("prefix", [0, 1, 13, 37])
@pytest.mark.parametrize("masked", [False, True])
def test_sdpa_and_flex_agree_on_cpu(prefix, masked):
    q, k, v = _qkv()
    key_mask = None
    if masked:
        key_mask = torch.ones(2, 37, dtype=torch.bool)
        key_mask[0, 5:9] = False  # e.g. padded text slots
        key_mask[1, 20:30] = False
    ref = attend(q, k, v, prefix, key_mask, backend="sdpa")
    flex = attend(q, k, v, prefix, key_mask, backend="flex", compile_flex=False)
    assert (ref - flex).abs().max() < TOL
    # and both equal the definition: softmax over the allowed keys only
    mask = prefix_lm_mask(37, prefix, key_mask)
    scores = (q @ k.transpose(-1, -2)) / 4.0
    manual = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
    assert (ref - manual).abs().max() < TOL


@pytest.mark.slow
def test_compiled_flex_inference_on_cpu_agrees():
    q, k, v = _qkv(length=256)  # whole 128-blocks: the only lengths compiled on CPU
    key_mask = torch.ones(2, 256, dtype=torch.bool)
    key_mask[0, 5:9] = False
    with torch.no_grad():
        ref = attend(q, k, v, 77, key_mask, backend="sdpa")
        out = attend(q, k, v, 77, key_mask, backend="flex", compile_flex=True)
    assert (ref - out).abs().max() < TOL


def test_compiled_flex_with_a_partial_block_on_cpu_runs_eagerly(monkeypatch, caplog):
    attention._warn_once.cache_clear()
    monkeypatch.setattr(attention, "_compiled_flex", lambda dynamic: pytest.fail("compiled"))
    q, k, v = _qkv(length=40)
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="videopoet.core.attention"):
        out = attend(q, k, v, 11, backend="flex", compile_flex=True)
    assert "eagerly" in caplog.text
    assert (attend(q, k, v, 11, backend="sdpa") - out).abs().max() < TOL


def test_flex_training_on_cpu_falls_back_to_sdpa(caplog):
    attention._warn_once.cache_clear()
    q, k, v = _qkv()
    q.requires_grad_(True)
    with caplog.at_level(logging.WARNING, logger="videopoet.core.attention"):
        out = attend(q, k, v, 9, backend="flex")
    out.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
    assert "using 'sdpa'" in caplog.text


def test_xformers_falls_back_with_a_log_line_on_cpu(caplog):
    attention._warn_once.cache_clear()
    q, k, v = _qkv()
    with caplog.at_level(logging.WARNING, logger="videopoet.core.attention"):
        out = attend(q, k, v, 9, backend="xformers")
    assert "xformers" in caplog.text and "sdpa" in caplog.text
    assert torch.equal(out, attend(q, k, v, 9, backend="sdpa"))


def test_missing_xformers_on_cuda_resolves_to_sdpa(monkeypatch, caplog):
    attention._warn_once.cache_clear()
    monkeypatch.setattr(attention, "_xformers_ops", lambda: None)
    with caplog.at_level(logging.WARNING, logger="videopoet.core.attention"):
        assert resolve_backend("xformers", torch.device("cuda")) == "sdpa"
    assert "not installed" in caplog.text
    assert resolve_backend("auto", torch.device("cuda")) == "sdpa"
    assert resolve_backend("auto", torch.device("cpu")) == "sdpa"


def test_xformers_without_working_kernels_resolves_to_sdpa(monkeypatch, caplog):
    """An xformers wheel built for another torch imports, then fails on its first call."""
    attention._warn_once.cache_clear()
    probe = attention._xformers_failure
    probe.cache_clear()

    class _NoKernels(_FakeXformers):
        def memory_efficient_attention(self, q, k, v, attn_bias=None):
            raise NotImplementedError("No operator found for `memory_efficient_attention_forward`")

    monkeypatch.setattr(attention, "_xformers_ops", lambda: _NoKernels())
    try:
        # the probe itself, on the CPU (the fakes' kernels are CPU ones)
        failure = probe("cpu")
        assert failure is not None and "No operator found" in failure
        with torch.inference_mode():  # a decoding caller: the probe's backward still runs
            monkeypatch.setattr(attention, "_xformers_ops", lambda: _FakeXformers())
            assert probe.__wrapped__("cpu") is None
        # what a CUDA caller gets when the probe fails there
        monkeypatch.setattr(attention, "_xformers_ops", lambda: _NoKernels())
        monkeypatch.setattr(attention, "_xformers_failure", lambda device: failure)
        with caplog.at_level(logging.WARNING, logger="videopoet.core.attention"):
            assert resolve_backend("xformers", torch.device("cuda")) == "sdpa"
        assert "kernels do not run" in caplog.text and "No operator found" in caplog.text
        assert resolve_backend("auto", torch.device("cuda")) == "sdpa"
    finally:
        probe.cache_clear()


def test_unknown_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="attention"):
        resolve_backend("flash9", torch.device("cpu"))


class _FakeXformers:
    """Stands in for xformers.ops on CPU: same layout (B, M, H, K) and bias classes."""

    class _BottomRight:
        pass

    fmha = types.SimpleNamespace(
        attn_bias=types.SimpleNamespace(LowerTriangularFromBottomRightMask=_BottomRight)
    )

    def memory_efficient_attention(self, q, k, v, attn_bias=None):
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if isinstance(attn_bias, self._BottomRight):
            lq, lk = q.shape[-2], k.shape[-2]
            i = torch.arange(lq)[:, None]
            j = torch.arange(lk)[None, :]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=j <= i + (lk - lq))
        elif attn_bias is not None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2)


@pytest.mark.parametrize("prefix", [0, 10, 37])
@pytest.mark.parametrize("masked", [False, True])
def test_xformers_two_call_form_is_exact(monkeypatch, prefix, masked):
    monkeypatch.setattr(attention, "_xformers_ops", lambda: _FakeXformers())
    q, k, v = _qkv()
    key_mask = None
    if masked:
        key_mask = torch.ones(2, 37, dtype=torch.bool)
        key_mask[:, 3:7] = False
    ref = attend(q, k, v, prefix, key_mask, backend="sdpa")
    out = attention._xformers(q, k, v, prefix, key_mask)
    assert (ref - out).abs().max() < TOL


# ---------------------------------------------------------------- behaviour inside the model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return PrefixLM(
        ModelConfig.preset("tiny", vocab_size=300, text_dim=8, grid_positions=False)
    ).eval()


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
def test_prefix_is_bidirectional_and_target_causal(model, backend):
    model.config.attention = backend
    model.config.flex_compile = False
    try:
        tokens = torch.randint(1, 300, (1, 30), generator=torch.Generator().manual_seed(1))
        prefix = 12
        with torch.no_grad():
            base = model.hidden_states(tokens, prefix)
            changed = tokens.clone()
            changed[0, 8] = (changed[0, 8] + 1) % 300  # a late prefix token
            moved = (model.hidden_states(changed, prefix) - base).abs().amax(-1)[0]
            # every position sees the whole prefix, including earlier prefix positions
            assert (moved > 1e-4).all()
            changed = tokens.clone()
            changed[0, 20] = (changed[0, 20] + 1) % 300  # a target token
            moved = (model.hidden_states(changed, prefix) - base).abs().amax(-1)[0]
            assert (moved[:20] == 0).all()  # nothing before it sees it
            assert (moved[20:] > 1e-4).all()  # it and everything after do
    finally:
        model.config.attention = "auto"


def test_masked_keys_are_never_seen(model):
    tokens = torch.randint(1, 300, (1, 20), generator=torch.Generator().manual_seed(2))
    key_mask = torch.ones(1, 20, dtype=torch.bool)
    key_mask[0, 4:6] = False
    with torch.no_grad():
        base = model.hidden_states(tokens, 10, key_mask=key_mask)
        changed = tokens.clone()
        changed[0, 4:6] = 7
        moved = (model.hidden_states(changed, 10, key_mask=key_mask) - base).abs().amax(-1)[0]
    assert (moved[[0, 1, 2, 3, *range(6, 20)]] == 0).all()
