"""Prefix-LM attention behind one interface (paper 3.2).

Query ``i`` sees key ``j`` when ``j <= i`` or ``j < prefix_length`` (the prefix is
bidirectional, the target causal), and never a key that ``key_mask`` switches off (padded text
slots, a condition dropped for classifier-free guidance).

Backends, all exact (they differ in speed and where they run):

``sdpa``
    :func:`torch.nn.functional.scaled_dot_product_attention` with a boolean mask. Runs
    everywhere, trains everywhere: the default on CPU.
``flex``
    :func:`torch.nn.attention.flex_attention.flex_attention` with a prefix-LM block mask, so
    fully masked blocks are skipped. Compiled on CUDA. On CPU, torch 2.9.1 compiles the forward
    only (the compiled backward fails), so a CPU forward that needs gradients falls back to
    ``sdpa`` with a log line; CPU inference runs it compiled (``compile=True``) or eagerly.
    For a length that is not a multiple of 128 (a partial block) the compiled CPU kernel
    returns wrong rows (NaN seen, not every compile), so then it runs eagerly, with a log line.
``xformers``
    ``xformers.ops.memory_efficient_attention`` (CUDA only: no CPU kernels). xformers has no
    prefix-LM bias class, so an exact pass is two calls: the prefix queries over the prefix keys
    with no mask, then the target queries over all keys with
    ``LowerTriangularFromBottomRightMask`` (target query ``t`` sees keys ``<= prefix + t``).
    With a key mask the pass is one call with an additive bias tensor. Missing xformers, an
    xformers whose kernels do not run (a wheel built for another torch imports but has no
    kernels: a tiny call decides, once per device) or a CPU tensor falls back to ``sdpa`` with
    a log line, never an error.
``auto``
    ``xformers`` on CUDA when its kernels run, else ``sdpa`` (measured faster than ``flex`` in
    the model's training step on an H200: ``benchmarks/cuda_train.py``).

Tensors are ``(batch, heads, length, head_dim)`` throughout.
"""

from __future__ import annotations

import functools
import importlib
import logging
from typing import Literal

import torch
import torch.nn.functional as F

from videopoet.core.errors import ConfigError

log = logging.getLogger(__name__)

Backend = Literal["auto", "sdpa", "flex", "xformers"]
BACKENDS: tuple[str, ...] = ("auto", "sdpa", "flex", "xformers")


@functools.cache
def _xformers_ops():
    """The xformers ops module, or None when xformers is not installed (imported lazily)."""
    try:
        # imported by name so that no import statement of this CUDA-only package exists
        xops = importlib.import_module("xformers.ops")
    except Exception as exc:  # ImportError, or a broken build that fails on import
        log.info("xformers unavailable (%s)", exc)
        return None
    return xops


@functools.cache
def _xformers_failure(device: str) -> str | None:
    """Why xformers' kernels do not run on ``device`` (None: they do), tried once per device.

    An importable xformers can still lack its kernels (a wheel built for another torch or
    CUDA imports, warns, and raises on the first call), so a tiny forward and backward decide.
    """
    xops = _xformers_ops()
    try:
        # callers may be decoding under no_grad or inference_mode
        with torch.inference_mode(False), torch.enable_grad():
            q = torch.randn(1, 8, 1, 64, device=device, dtype=torch.float16, requires_grad=True)
            causal = xops.fmha.attn_bias.LowerTriangularFromBottomRightMask()
            xops.memory_efficient_attention(q, q, q, attn_bias=causal).sum().backward()
    except Exception as exc:  # NotImplementedError from its dispatcher, or a CUDA error
        return str(exc).strip().splitlines()[0]
    return None


def _xformers_problem(device: torch.device) -> str | None:
    """Why xformers cannot run on ``device`` (None: it can), in words for a log line."""
    if device.type != "cuda":
        return "has no CPU kernels"
    if _xformers_ops() is None:
        return "is not installed"
    failure = _xformers_failure(str(device))
    if failure is not None:
        return (
            f"is installed but its kernels do not run here ({failure}; a build for another "
            "torch or CUDA?)"
        )
    return None


@functools.cache
def _warn_once(message: str) -> None:
    log.warning(message)


def resolve_backend(name: str, device: torch.device, needs_grad: bool = False) -> str:
    """The backend that will run: ``name`` when it can run here, else ``sdpa`` (logged once)."""
    if name not in BACKENDS:
        raise ConfigError("attention", name, f"one of {', '.join(BACKENDS)}")
    cuda = device.type == "cuda"
    if name == "auto":
        if _xformers_problem(device) is None:
            return "xformers"
        # not flex: on an H200 the model's training step ran 2-8x slower with it than with
        # SDPA's fused masked kernel (benchmarks/cuda_train.py, docs/model.md)
        return "sdpa"
    if name == "xformers":
        problem = _xformers_problem(device)
        if problem is not None:
            _warn_once(f"attention backend 'xformers' {problem}: using 'sdpa'")
            return "sdpa"
    if name == "flex" and not cuda and needs_grad:
        _warn_once(
            "attention backend 'flex' cannot train on CPU in this torch (the compiled backward "
            "fails): using 'sdpa' for forwards that need gradients"
        )
        return "sdpa"
    return name


def prefix_lm_mask(
    length: int,
    prefix_length: int,
    key_mask: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Boolean mask, True where query ``i`` may see key ``j``: (1 or B, 1, L, L)."""
    i = torch.arange(length, device=device)
    mask = (i[None, :] <= i[:, None]) | (i[None, :] < prefix_length)
    mask = mask[None, None]
    if key_mask is not None:
        mask = mask & key_mask[:, None, None, :].to(device=device, dtype=torch.bool)
    return mask


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    prefix_length: int,
    key_mask: torch.Tensor | None = None,
    backend: str = "sdpa",
    compile_flex: bool = True,
) -> torch.Tensor:
    """Prefix-LM attention over a whole sequence (training, or the prefill of generation)."""
    length = q.shape[-2]
    if not 0 <= prefix_length <= length:
        raise ConfigError("prefix_length", prefix_length, f"0 to the sequence length {length}")
    if key_mask is not None and bool(key_mask.all()):
        key_mask = None  # a mask that hides nothing only costs time
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    backend = resolve_backend(backend, q.device, needs_grad)
    if backend == "flex":
        return _flex(q, k, v, prefix_length, key_mask, compile_flex)
    if backend == "xformers":
        return _xformers(q, k, v, prefix_length, key_mask)
    return _sdpa(q, k, v, prefix_length, key_mask)


def _sdpa(q, k, v, prefix_length, key_mask):
    if prefix_length == 0 and key_mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    mask = prefix_lm_mask(q.shape[-2], prefix_length, key_mask, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


# --------------------------------------------------------------------------- flex


_FLEX_BLOCK = 128  # FlexAttention's default block size


@functools.cache
def _compiled_flex(dynamic: bool | None):
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=dynamic)


def _flex(q, k, v, prefix_length, key_mask, compile_flex):
    import warnings

    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    batch, _, length, _ = q.shape
    # the prefix length is a tensor so a new length does not force a recompilation
    prefix = torch.tensor(prefix_length, device=q.device)
    valid = key_mask.to(device=q.device, dtype=torch.bool) if key_mask is not None else None

    def mask_mod(b, h, q_idx, kv_idx):
        seen = (kv_idx <= q_idx) | (kv_idx < prefix)
        if valid is not None:
            seen = seen & valid[b, kv_idx]
        return seen

    block_mask = create_block_mask(
        mask_mod, batch if valid is not None else None, None, length, length, device=q.device
    )
    if compile_flex and q.device.type == "cpu" and length % _FLEX_BLOCK:
        # torch 2.9.1's compiled CPU kernel returns wrong rows (even NaN) for a partial block
        _warn_once(
            f"compiled FlexAttention on CPU is wrong for lengths that are not a multiple of "
            f"{_FLEX_BLOCK}: running it eagerly"
        )
        compile_flex = False
    if compile_flex:
        # CUDA: sizes become symbolic after the first new one, so the many layout lengths of
        # a task mixture share a kernel instead of exhausting dynamo's recompile limit (8),
        # after which flex_attention runs unfused; the CPU kernel stays static (see above)
        dynamic = None if q.device.type == "cuda" else False
        return _compiled_flex(dynamic)(q, k, v, block_mask=block_mask)
    with warnings.catch_warnings():
        # eager flex_attention warns that it is meant for debugging; it is exact, only slow
        warnings.simplefilter("ignore", UserWarning)
        return flex_attention(q, k, v, block_mask=block_mask)


# --------------------------------------------------------------------------- xformers


def _xformers(q, k, v, prefix_length, key_mask):
    xops = _xformers_ops()
    # xformers takes (batch, length, heads, head_dim)
    q, k, v = (t.transpose(1, 2).contiguous() for t in (q, k, v))
    length = q.shape[1]
    if key_mask is not None:
        bias = _additive_bias(q, prefix_length, key_mask)
        out = xops.memory_efficient_attention(q, k, v, attn_bias=bias)
        return out.transpose(1, 2)
    parts = []
    if prefix_length > 0:
        kp, vp = k[:, :prefix_length], v[:, :prefix_length]
        parts.append(xops.memory_efficient_attention(q[:, :prefix_length], kp, vp))
    if prefix_length < length:
        causal = xops.fmha.attn_bias.LowerTriangularFromBottomRightMask()
        parts.append(xops.memory_efficient_attention(q[:, prefix_length:], k, v, attn_bias=causal))
    return torch.cat(parts, dim=1).transpose(1, 2)


def _additive_bias(q, prefix_length, key_mask):
    """(B, H, L, L) bias of 0 / -inf; the last dimension padded to a multiple of 8 because
    xformers kernels need an aligned bias stride."""
    batch, length, heads, _ = q.shape
    mask = prefix_lm_mask(length, prefix_length, key_mask, q.device)
    padded = -(-length // 8) * 8
    bias = torch.zeros(batch, heads, length, padded, dtype=q.dtype, device=q.device)
    bias = bias[..., :length]
    bias.masked_fill_(~mask.expand(batch, heads, length, length), float("-inf"))
    return bias


def attend_cached(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None
) -> torch.Tensor:
    """Queries at the end of the sequence over every cached key (one decoding step).

    The newest positions are targets, so they see the whole prefix and every earlier target:
    with one query per row the only mask left is ``key_mask``. Every backend uses SDPA here:
    with one query there is no block structure to exploit.
    """
    if q.shape[-2] != 1:
        raise ConfigError("query length", q.shape[-2], "1 (one decoding step at a time)")
    mask = None if key_mask is None else key_mask[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
