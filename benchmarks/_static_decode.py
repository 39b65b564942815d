"""A decoder for benchmarks/decode.py: the library's model, fewer bytes read per token.

:class:`StaticDecoder` runs the same computation as ``PrefixLM.decode_step`` +
``logits_slice`` (checked: same tokens in float32), with three changes a variant can switch on:

- weights in ``dtype`` (bfloat16 halves the bytes read per token);
- ``pack`` (``pack_head``: only the head's slices): each weight matrix reordered once into
  oneDNN's blocked layout (``torch.ops.mkldnn._reorder_linear_weight``, what
  ``torch.compile``'s freezing pass does), so the bfloat16 matrix-vector products run oneDNN's
  kernels (AMX / AVX-512-BF16) instead of the stock ones, which on this CPU are slower in
  bfloat16 than in float32;
- a static cache: per-layer key/value buffers of the whole sequence, written with
  ``index_copy_`` at a position tensor and attended over in full with a validity mask, so
  every step has the same shapes and ``torch.compile`` traces one graph for all of them.

The prefill runs through the library (a model in ``dtype``), then its cache is copied in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from videopoet.core.model import PrefixLM


def _rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat([x[..., half:], x[..., :half]], dim=-1) * signed_sin


class StaticDecoder(nn.Module):
    """One decoding step of ``model`` over a static cache of ``capacity`` positions."""

    NAMES = ("attn_norm", "qkv", "out", "mlp_norm", "gate_up", "down")

    def __init__(
        self,
        model: PrefixLM,
        dtype: torch.dtype,
        capacity: int,
        rows: int = 1,
        pack: bool = False,
        pack_head: bool | None = None,
    ) -> None:
        super().__init__()
        c = model.config
        self.heads, self.head_dim, self.hidden = c.n_heads, c.head_dim, c.hidden_dim
        self.eps, self.dtype, self.layers = c.norm_eps, dtype, c.n_layers
        self.pack_head = pack if pack_head is None else pack_head
        self.packed: dict[str, torch.Tensor] = {}  # oneDNN tensors cannot be module buffers
        with torch.no_grad():
            self.register_buffer("embed", model.embed.weight.to(dtype))
            self.register_buffer("norm", model.norm.weight.to(dtype))
            self.register_buffer("cos", model.rope_cos.to(dtype))
            self.register_buffer("sin", model.rope_sin.to(dtype))
            for i, block in enumerate(model.blocks):
                weights = {
                    "attn_norm": block.attn_norm.weight,
                    "qkv": block.attn.qkv.weight,
                    "out": block.attn.out.weight,
                    "mlp_norm": block.mlp_norm.weight,
                    "gate_up": block.mlp.gate_up.weight,
                    "down": block.mlp.down.weight,
                }
                for name, weight in weights.items():
                    if pack and weight.dim() == 2:
                        self.packed[f"{name}{i}"] = self._pack(weight)
                    else:
                        self.register_buffer(f"{name}{i}", weight.to(dtype).contiguous())
                shape = (rows, c.n_heads, capacity, c.head_dim)
                self.register_buffer(f"keys{i}", torch.zeros(shape, dtype=dtype))
                self.register_buffer(f"values{i}", torch.zeros(shape, dtype=dtype))
        self.head_weight = model.head.weight
        self.heads_by_range: dict[tuple[int, int], torch.Tensor] = {}

    def _pack(self, weight: torch.Tensor) -> torch.Tensor:
        """An input-major (in, out) weight as oneDNN's packed (out, in) matrix."""
        plain = weight.detach().t().to(self.dtype).contiguous()
        return torch.ops.mkldnn._reorder_linear_weight(plain, 1)

    def _weight(self, name: str) -> torch.Tensor:
        return self.packed[name] if name in self.packed else getattr(self, name)

    def _mm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if weight.is_mkldnn:
            return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")
        return x @ weight

    def load_prefill(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        """Copy a library cache's first ``length`` positions: (layers, rows, H, max, Dh)."""
        for i in range(self.layers):
            getattr(self, f"keys{i}")[:, :, :length] = keys[i, :, :, :length]
            getattr(self, f"values{i}")[:, :, :length] = values[i, :, :, :length]

    def logits(self, hidden: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """Logits of ids ``[lo, hi)``; the head slice is converted (and packed) once."""
        if (lo, hi) not in self.heads_by_range:
            with torch.no_grad():
                piece = self.head_weight[:, lo:hi]
                self.heads_by_range[lo, hi] = (
                    self._pack(piece) if self.pack_head else piece.to(self.dtype).contiguous()
                )
        return self._mm(hidden, self.heads_by_range[lo, hi])

    def forward(
        self, tokens: torch.Tensor, position: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """Tokens (rows,) at ``position`` (a (1,) long tensor); ``valid`` (rows, capacity) is
        True for the keys to attend to (the new position included). Final hidden (rows, d)."""
        x = self.embed[tokens]
        rows = x.shape[0]
        cos, sin = self.cos[position], self.sin[position]
        mask = valid[:, None, None, :]
        for i in range(self.layers):
            h = F.rms_norm(x, (x.shape[-1],), getattr(self, f"attn_norm{i}"), self.eps)
            qkv = self._mm(h, self._weight(f"qkv{i}")).view(rows, 3, self.heads, self.head_dim)
            q, k, v = qkv.unbind(1)  # (rows, H, Dh)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            keys, values = getattr(self, f"keys{i}"), getattr(self, f"values{i}")
            keys.index_copy_(2, position, k[:, :, None])
            values.index_copy_(2, position, v[:, :, None])
            y = F.scaled_dot_product_attention(q[:, :, None], keys, values, attn_mask=mask)
            x = x + self._mm(y.reshape(rows, -1), self._weight(f"out{i}"))
            h = F.rms_norm(x, (x.shape[-1],), getattr(self, f"mlp_norm{i}"), self.eps)
            gate, up = self._mm(h, self._weight(f"gate_up{i}")).split(self.hidden, dim=-1)
            x = x + self._mm(F.silu(gate) * up, self._weight(f"down{i}"))
        return F.rms_norm(x, (x.shape[-1],), self.norm, self.eps)
