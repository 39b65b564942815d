"""The tokenizer's 3D convolution under CPU bfloat16 autocast: float32 weight gradients."""

from __future__ import annotations

import pytest
import torch

from videopoet.plugins.magvit.bf16_conv import Conv3d, cpu_bf16_training

pytestmark = pytest.mark.usefixtures("one_thread")


def _grads(conv: torch.nn.Module, x: torch.Tensor, bf16: bool):
    conv.zero_grad()
    xi = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = conv(xi)
    y.float().pow(2).mean().backward()
    return y, conv.weight.grad.clone(), conv.bias.grad.clone(), xi.grad.clone()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize(
    "cin,cout,kernel,stride,padding",
    [
        (8, 32, 3, (1, 1, 1), (0, 1, 1)),  # the causal convolution (time padded outside)
        (8, 16, 3, (2, 2, 2), (0, 1, 1)),  # temporal and spatial downsampling
        (12, 6, 1, (1, 1, 1), 0),  # a residual block's skip, the patch shortcut
    ],
)
def test_bf16_autocast_gradients_are_float32_weight_gradients(cin, cout, kernel, stride, padding):
    torch.manual_seed(0)
    conv = Conv3d(cin, cout, kernel, stride=stride, padding=padding)
    x = torch.randn(2, cin, 5, 12, 12)
    y32, w32, b32, x32 = _grads(conv, x, bf16=False)
    y16, w16, b16, x16 = _grads(conv, x, bf16=True)
    assert y32.dtype == torch.float32 and y16.dtype == torch.bfloat16
    assert "Bf16Conv3dFloatWeightGrad" in type(y16.grad_fn).__name__
    assert "Convolution" in type(y32.grad_fn).__name__  # float32: nn.Conv3d itself
    # the parameters' gradients are float32 and bfloat16-close to float32's (8-bit mantissa)
    assert w16.dtype == b16.dtype == torch.float32 and x16.dtype == torch.float32
    for got, want in ((w16, w32), (b16, b32), (x16, x32)):
        assert torch.isfinite(got).all()
        assert _rel(got, want) < 0.01
    # the weight gradient is the float32 one of the bfloat16-rounded input and output
    # gradient: closer to float32's than oneDNN's own bfloat16 weight gradient can be
    plain = torch.nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding)
    plain.load_state_dict(conv.state_dict())  # same parameters, same keys
    _, w_plain, _, _ = _grads(plain, x, bf16=True)
    assert _rel(w16, w32) <= _rel(w_plain, w32) + 1e-3


def test_only_cpu_bf16_training_takes_the_float32_weight_gradient_path():
    x = torch.zeros(1, 2, 3, 4, 4)
    assert not cpu_bf16_training(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert cpu_bf16_training(x)
        with torch.no_grad():
            assert not cpu_bf16_training(x)  # inference: oneDNN's forward is right
    conv = Conv3d(2, 4, 3, padding=1)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        assert conv(x).dtype == torch.bfloat16


def test_the_committed_tokenizer_trains_a_step_in_bf16_with_finite_gradients():
    from pathlib import Path

    from videopoet.data import world
    from videopoet.plugins.magvit.model import MagvitTokenizer

    path = Path(__file__).resolve().parents[1] / "checkpoints" / "magvit2_tiny_world"
    tokenizer = MagvitTokenizer.from_pretrained(path).train()
    video = world.make_batch([0, 1], 5, 32, 32)
    grads = {}
    for bf16 in (False, True):
        tokenizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            recon, _ = tokenizer(video)
            (recon.float() - video).pow(2).mean().backward()
        grads[bf16] = {
            n: p.grad.clone() for n, p in tokenizer.named_parameters() if p.grad is not None
        }
    assert grads[True].keys() == grads[False].keys()
    assert all(torch.isfinite(g).all() and g.dtype == torch.float32 for g in grads[True].values())
    errors = sorted(_rel(grads[True][n], g) for n, g in grads[False].items() if g.norm() > 0)
    assert errors[len(errors) // 2] < 0.1  # bfloat16 rounding over the whole network
