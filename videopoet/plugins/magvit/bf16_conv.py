"""3D convolutions that train correctly under bfloat16 autocast on the CPU.

oneDNN (the kernels torch uses on x86 CPUs) computes the *weight* gradient of some bfloat16 3D
convolutions wrongly: at the tiny tokenizer's last upsampling (32 → 256 channels on 5 frames of
32×32), and 64 → 256 / 512, entries come out NaN or off by about 10⁴, differently from run to
run, while the forward pass and the input gradient are right (``python
benchmarks/bf16_cpu_conv.py`` shows it per shape). :class:`Conv3d` is ``nn.Conv3d`` (same
parameters, same state-dict keys) whose training step, under CPU bfloat16 autocast, runs the
forward and the input gradient in bfloat16 and the weight and bias gradients in float32 from
the same bfloat16-rounded tensors. Everywhere else (float32, inference, CUDA) it is
``nn.Conv3d`` itself.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def cpu_bf16_training(x: torch.Tensor) -> bool:
    """Whether a convolution of ``x`` would run oneDNN's bfloat16 backward here."""
    return (
        x.device.type == "cpu"
        and torch.is_grad_enabled()
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )


class _Bf16Conv3dFloatWeightGrad(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        dilation: tuple[int, ...],
        groups: int,
    ) -> torch.Tensor:
        xb, wb = x.to(torch.bfloat16), weight.to(torch.bfloat16)
        bb = None if bias is None else bias.to(torch.bfloat16)
        ctx.save_for_backward(xb, wb)
        ctx.setup = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        with torch.autocast("cpu", enabled=False):
            return F.conv3d(xb, wb, bb, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        xb, wb = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.setup
        grad_x = grad_w = grad_b = None
        with torch.autocast("cpu", enabled=False):
            if ctx.needs_input_grad[0]:  # oneDNN's bfloat16 input gradient is right
                grad_x = torch.nn.grad.conv3d_input(
                    xb.shape, wb, grad_out.to(torch.bfloat16), stride, padding, dilation, groups
                )
            if ctx.needs_input_grad[1]:  # its bfloat16 weight gradient is not: float32
                grad_w = torch.nn.grad.conv3d_weight(
                    xb.float(), wb.shape, grad_out.float(), stride, padding, dilation, groups
                )
            if ctx.has_bias and ctx.needs_input_grad[2]:
                grad_b = grad_out.float().sum((0, 2, 3, 4))
        return grad_x, grad_w, grad_b, None, None, None, None


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` with float32 weight gradients under CPU bfloat16 autocast (module
    docstring); zero padding only (what the tokenizer uses)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros" or not cpu_bf16_training(x):
            return super().forward(x)
        return _Bf16Conv3dFloatWeightGrad.apply(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )
