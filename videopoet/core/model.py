"""The prefix LM (paper 3.2): a decoder-only transformer over the unified vocabulary.

Pre-norm blocks with RMSNorm, rotary positions (the ``rotate_half`` convention of Llama, so
weights map one-to-one onto ``transformers``' ``LlamaForCausalLM``), a SwiGLU MLP and no
biases. Query ``i`` sees key ``j`` when ``j <= i`` or ``j`` lies in the prefix
(:mod:`videopoet.core.attention`). Text embeddings from any text encoder are projected by one
linear layer into the text slots of the layout.

Rotary positions say only how far apart two tokens are in the flat sequence. With
``grid_positions`` the LM also adds, to each token's embedding, learned embeddings of its place
in the clip (:attr:`Layout.grid <videopoet.sequences.layout.Layout.grid>`: latent time, row,
column; time shared by video and audio), so a token knows which row of which frame it is,
and a video token can find the sound of its instant, without working it out from distances.

Every weight matrix is stored input-major, ``(in_features, out_features)``, and applied as
``x @ weight``: in token-by-token decoding each matmul is a matrix-vector product limited by
memory bandwidth, and on CPU that orientation streams about 10 % faster than ``nn.Linear``'s
``(out, in)`` (measured: 39 ms against 43 ms for the 512 × 266,496 output head on one thread
of this machine, 19.5 against 21.9 ms on two). The output head is the largest matrix, so this
is most of the decoding time (``benchmarks/decode.py`` splits the gain over HF's Llama).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from videopoet.core.attention import attend, attend_cached
from videopoet.core.errors import ConfigError, VocabularyError

#: Fixed by the layout: ``<bos> <task> <bot_i>`` come first, so the text slots start here.
TEXT_START = 3


class ModelConfig(BaseModel):
    """Sizes and options of a :class:`PrefixLM`; saved as ``config.json`` with the weights."""

    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(ge=2)
    d_model: int = Field(512, ge=8)
    n_layers: int = Field(8, ge=1)
    n_heads: int = Field(8, ge=1)
    #: SwiGLU hidden width; default ``8/3 · d_model`` rounded up to a multiple of 64.
    ffn_dim: int | None = Field(None, ge=1)
    #: Width of the text encoder's embeddings (384 for all-MiniLM-L6-v2, 4096 for T5-XXL).
    text_dim: int = Field(384, ge=1)
    max_seq_len: int = Field(4096, ge=2)
    rope_theta: float = Field(10_000.0, gt=0)
    norm_eps: float = Field(1e-5, gt=0)
    init_std: float = Field(0.02, gt=0)
    attention: Literal["auto", "sdpa", "flex", "xformers"] = "auto"
    #: Compile FlexAttention (CUDA always; CPU inference only, see attention.py).
    flex_compile: bool = True
    #: Rows of the output head per chunk of the training loss, bounding its memory.
    loss_chunk_tokens: int = Field(512, ge=1)
    #: Learned embeddings of each token's place in the clip (time, row, column) added to its
    #: own; every call then takes the layout's ``grid`` (Layout.grid_tensor()).
    grid_positions: bool = False
    #: Largest time, row or column index a grid embedding holds (latent frames, rows, columns).
    grid_size: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError("the head width d_model / n_heads must be even for rotary positions")
        return self

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def hidden_dim(self) -> int:
        if self.ffn_dim is not None:
            return self.ffn_dim
        return -(-(8 * self.d_model // 3) // 64) * 64

    @classmethod
    def preset(cls, name: str, vocab_size: int, **overrides: Any) -> ModelConfig:
        """A named size (``tiny``, ``small``, ``300m``, ``1b``, ``8b``) with overrides."""
        if name not in PRESETS:
            raise ConfigError("preset", name, f"one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], "vocab_size": vocab_size, **overrides})

    def parameter_count(self) -> int:
        d, f, v = self.d_model, self.hidden_dim, self.vocab_size
        block = 4 * d * d + 3 * d * f + 2 * d
        grid = 3 * (self.grid_size + 1) * d if self.grid_positions else 0
        return 2 * v * d + self.text_dim * d + self.n_layers * block + d + grid


#: The paper names 300M, 1B and 8B models (Fig. 5) without their shapes; these are ours
#: (Llama-like proportions). Counts include the 266,496 × d embedding and head. Context: the
#: tiny preset holds every layout of the demo format 17x64x64 (the longest, stylize with its
#: first frame, is 779 tokens); the others every layout of the paper's formats (the longest,
#: stylize at 41x224x128 with its first frame, is 10,381; tests/test_presets.py checks both).
PAPER_CONTEXT = 12_288
#: Every preset places its tokens on the clip's grid (``grid_positions``; docs/model.md): on
#: the tiny world it lowered frame prediction's position error and raised image-to-video's
#: first-frame PSNR and video-to-audio's correlation over the same training without it.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"d_model": 128, "n_layers": 4, "n_heads": 4, "max_seq_len": 2048},
    "small": {"d_model": 512, "n_layers": 8, "n_heads": 8, "max_seq_len": PAPER_CONTEXT},
    "300m": {"d_model": 1024, "n_layers": 12, "n_heads": 16, "max_seq_len": PAPER_CONTEXT},
    "1b": {"d_model": 2048, "n_layers": 16, "n_heads": 16, "max_seq_len": PAPER_CONTEXT},
    "8b": {
        "d_model": 4096,
        "n_layers": 32,
        "n_heads": 32,
        "ffn_dim": 11008,
        "max_seq_len": PAPER_CONTEXT,
    },
}
for _preset in PRESETS.values():
    _preset["grid_positions"] = True


# --------------------------------------------------------------------------- layers


class Dense(nn.Module):
    """A bias-free linear map stored input-major (see the module docstring for why)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def _rotary_tables(config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    half = config.head_dim // 2
    inv_freq = 1.0 / config.rope_theta ** (torch.arange(half, dtype=torch.float64) / half)
    angles = torch.outer(torch.arange(config.max_seq_len, dtype=torch.float64), inv_freq)
    cos, sin = angles.cos().float(), angles.sin().float()
    # the sign of Llama's rotate_half is folded into the sine table: one op less per rotation
    return torch.cat([cos, cos], dim=-1), torch.cat([-sin, sin], dim=-1)


def _rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat([x[..., half:], x[..., :half]], dim=-1) * signed_sin


@dataclass
class KVCache:
    """Preallocated keys and values of every layer: (layers, batch, heads, max_len, head_dim)."""

    keys: torch.Tensor
    values: torch.Tensor
    #: (batch, max_len) False where a key must never be seen (padded text, dropped condition)
    key_mask: torch.Tensor
    length: int = 0
    masks_anything: bool = False
    #: (max_len, 3) or (batch, max_len, 3): the layout's grid, read by decode_step
    grid: torch.Tensor | None = None

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.n_heads, self.head_dim = config.n_heads, config.head_dim
        self.qkv = Dense(config.d_model, 3 * config.d_model)  # fused: one read of x
        self.out = Dense(config.d_model, config.d_model)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        prefix_length: int,
        key_mask: torch.Tensor | None,
        cache: KVCache | None,
        layer: int,
    ) -> torch.Tensor:
        batch, length, _ = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.n_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, Dh)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        if cache is None:
            y = attend(
                q,
                k,
                v,
                prefix_length,
                key_mask,
                self.config.attention,
                self.config.flex_compile,
            )
        else:
            start, stop = cache.length, cache.length + length
            cache.keys[layer, :, :, start:stop] = k
            cache.values[layer, :, :, start:stop] = v
            if start == 0:  # the prefill: the usual prefix-LM pass over what was given
                y = attend(
                    q,
                    k,
                    v,
                    prefix_length,
                    key_mask,
                    self.config.attention,
                    self.config.flex_compile,
                )
            else:
                mask = cache.key_mask[:, :stop] if cache.masks_anything else None
                y = attend_cached(
                    q, cache.keys[layer, :, :, :stop], cache.values[layer, :, :, :stop], mask
                )
        return self.out(y.transpose(1, 2).reshape(batch, length, -1))


class SwiGLU(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.hidden = config.hidden_dim
        self.gate_up = Dense(config.d_model, 2 * self.hidden)  # fused gate and up projections
        self.down = Dense(self.hidden, config.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).split(self.hidden, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attn = Attention(config)
        self.mlp_norm = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = SwiGLU(config)

    def forward(self, x, cos, sin, prefix_length, key_mask, cache, layer):
        x = x + self.attn(self.attn_norm(x), cos, sin, prefix_length, key_mask, cache, layer)
        return x + self.mlp(self.mlp_norm(x))


# --------------------------------------------------------------------------- the model


class PrefixLM(nn.Module):
    """Decoder-only transformer with a bidirectional prefix and a causal target."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.text_proj = Dense(config.text_dim, config.d_model)
        if config.grid_positions:
            # index 0 = no place in the clip (special tokens, text): a zero vector, kept zero
            size = config.grid_size + 1
            self.grid_time = nn.Embedding(size, config.d_model, padding_idx=0)
            self.grid_row = nn.Embedding(size, config.d_model, padding_idx=0)
            self.grid_col = nn.Embedding(size, config.d_model, padding_idx=0)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.head = Dense(config.d_model, config.vocab_size)
        cos, sin = _rotary_tables(config)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.config.init_std
        for name, param in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(param)
            elif name.endswith(("out.weight", "down.weight")):
                # residual branches scaled down with depth (GPT-2) so activations stay bounded
                nn.init.normal_(param, std=std / math.sqrt(2 * self.config.n_layers))
            else:
                nn.init.normal_(param, std=std)
        if self.config.grid_positions:
            with torch.no_grad():
                for table in (self.grid_time, self.grid_row, self.grid_col):
                    table.weight[0].zero_()

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ embeddings

    def embed_inputs(
        self,
        tokens: torch.Tensor,
        text_embeddings: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        text_start: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token embeddings with the text slots replaced; and the key mask text padding needs.

        Padded text slots (``text_mask`` False) get a zero embedding and are masked out as
        keys, so no position attends to them.
        """
        if tokens.dim() != 2:
            raise ConfigError("tokens", tuple(tokens.shape), "a (batch, length) tensor of ids")
        x = self.embed(tokens)
        if text_embeddings is None:
            if text_mask is not None:
                raise ConfigError("text_mask", "given", "text_embeddings alongside it")
            return x, None
        batch, length = tokens.shape
        start = TEXT_START if text_start is None else text_start
        if text_embeddings.dim() != 3 or text_embeddings.shape[0] != batch:
            raise ConfigError(
                "text_embeddings",
                tuple(text_embeddings.shape),
                f"(batch={batch}, slots, {self.config.text_dim})",
            )
        k = text_embeddings.shape[1]
        if text_embeddings.shape[2] != self.config.text_dim:
            raise ConfigError(
                "text_embeddings",
                tuple(text_embeddings.shape),
                f"width {self.config.text_dim} (ModelConfig.text_dim)",
            )
        if start < 0 or start + k > length:
            raise ConfigError("text_start", start, f"text slots inside the {length} positions")
        projected = self.text_proj(text_embeddings.to(x.dtype))
        key_mask = None
        if text_mask is not None:
            if text_mask.shape != (batch, k):
                raise ConfigError("text_mask", tuple(text_mask.shape), f"({batch}, {k})")
            text_mask = text_mask.to(device=x.device, dtype=torch.bool)
            projected = projected * text_mask[..., None]
            key_mask = torch.ones(batch, length, dtype=torch.bool, device=x.device)
            key_mask[:, start : start + k] = text_mask
        x = torch.cat([x[:, :start], projected, x[:, start + k :]], dim=1)
        return x, key_mask

    def add_grid(self, x: torch.Tensor, grid: torch.Tensor | None, start: int = 0) -> torch.Tensor:
        """``x`` (B, L, d) plus the grid embeddings of positions ``start .. start + L``;
        ``grid`` (≥ start + L, 3) or (B, ≥ start + L, 3). A model without grid positions
        ignores it."""
        if not self.config.grid_positions:
            return x
        length = x.shape[1]
        if grid is None:
            raise ConfigError(
                "grid",
                None,
                "the layout's grid positions (Layout.grid_tensor(), (length, 3)): this LM "
                "was made with grid_positions; token shards written without a grid must be "
                "tokenized again",
            )
        if grid.dim() not in (2, 3) or grid.shape[-1] != 3 or grid.shape[-2] < start + length:
            raise ConfigError(
                "grid", tuple(grid.shape), f"(length >= {start + length}, 3) or (batch, length, 3)"
            )
        grid = grid[..., start : start + length, :].to(x.device)
        if grid.numel() and (grid.min() < 0 or grid.max() > self.config.grid_size):
            raise ConfigError(
                "grid",
                f"indices in [{int(grid.min())}, {int(grid.max())}]",
                f"0 to grid_size={self.config.grid_size} (ModelConfig.grid_size)",
            )
        placed = self.grid_time(grid[..., 0]) + self.grid_row(grid[..., 1])
        placed = placed + self.grid_col(grid[..., 2])
        return x + placed.to(x.dtype)

    # ------------------------------------------------------------------ forward passes

    def hidden_states(
        self,
        tokens: torch.Tensor,
        prefix_length: int,
        text_embeddings: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        *,
        text_start: int | None = None,
        key_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        grid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final-norm hidden states (B, L, d_model) of a whole sequence (or a prefill).
        ``grid``: the layout's grid positions, for a model with ``grid_positions`` (a prefill
        keeps it in the cache for :meth:`decode_step`)."""
        x, text_keys = self.embed_inputs(tokens, text_embeddings, text_mask, text_start)
        x = self.add_grid(x, grid)
        if cache is not None and grid is not None:
            cache.grid = grid
        key_mask = _combine(key_mask, text_keys)
        length = tokens.shape[1]
        if length > self.config.max_seq_len:
            raise ConfigError("sequence length", length, f"at most {self.config.max_seq_len}")
        if cache is not None:
            if cache.length != 0:
                raise ConfigError("cache", f"length {cache.length}", "an empty cache to prefill")
            if key_mask is not None:
                cache.key_mask[:, :length] = key_mask
                cache.masks_anything = not bool(key_mask.all())
        cos, sin = self.rope_cos[:length], self.rope_sin[:length]
        for layer, block in enumerate(self.blocks):
            x = block(x, cos, sin, prefix_length, key_mask, cache, layer)
        if cache is not None:
            cache.length = length
        return self.norm(x)

    def forward(
        self,
        tokens: torch.Tensor,
        prefix_length: int,
        text_embeddings: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        *,
        text_start: int | None = None,
        key_mask: torch.Tensor | None = None,
        grid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, L, vocab) at every position: position ``i`` predicts token ``i + 1``.

        For a real vocabulary this tensor is large; training uses :meth:`loss`, which never
        builds it.
        """
        hidden = self.hidden_states(
            tokens,
            prefix_length,
            text_embeddings,
            text_mask,
            text_start=text_start,
            key_mask=key_mask,
            grid=grid,
        )
        return self.head(hidden)

    def loss(
        self,
        tokens: torch.Tensor,
        prefix_length: int,
        text_embeddings: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        *,
        text_start: int | None = None,
        key_mask: torch.Tensor | None = None,
        loss_mask: torch.Tensor | None = None,
        grid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean cross-entropy of the target tokens (positions ``>= prefix_length``).

        ``loss_mask`` (B, L) narrows the scored positions further (True = scored). The head
        runs only on scored positions, in chunks, with the gradient computed chunk by chunk,
        so the (tokens × vocab) logits never exist at once.
        """
        batch, length = tokens.shape
        if not 1 <= prefix_length < length:
            raise ConfigError("prefix_length", prefix_length, f"1 to {length - 1}")
        hidden = self.hidden_states(
            tokens,
            prefix_length,
            text_embeddings,
            text_mask,
            text_start=text_start,
            key_mask=key_mask,
            grid=grid,
        )
        # position i predicts token i + 1: the target starts at prefix_length
        hidden = hidden[:, prefix_length - 1 : -1]
        labels = tokens[:, prefix_length:]
        if loss_mask is not None:
            if loss_mask.shape != tokens.shape:
                raise ConfigError("loss_mask", tuple(loss_mask.shape), f"{tuple(tokens.shape)}")
            keep = loss_mask[:, prefix_length:].to(torch.bool)
            hidden, labels = hidden[keep], labels[keep]
        hidden = hidden.reshape(-1, hidden.shape[-1])
        labels = labels.reshape(-1)
        return linear_cross_entropy(hidden, self.head.weight, labels, self.config.loss_chunk_tokens)

    # ------------------------------------------------------------------ decoding

    def new_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None) -> KVCache:
        c = self.config
        if max_len > c.max_seq_len:
            raise ConfigError("max_len", max_len, f"at most max_seq_len={c.max_seq_len}")
        dtype = dtype or self.embed.weight.dtype
        shape = (c.n_layers, batch, c.n_heads, max_len, c.head_dim)
        device = self.device
        return KVCache(
            keys=torch.zeros(shape, dtype=dtype, device=device),
            values=torch.zeros(shape, dtype=dtype, device=device),
            key_mask=torch.ones(batch, max_len, dtype=torch.bool, device=device),
        )

    def decode_step(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Append one token per row (B,) to the cache; its final hidden state (B, d_model)."""
        position = cache.length
        if position >= cache.capacity:
            raise ConfigError("cache", f"full at {position}", "room for one more token")
        x = self.add_grid(self.embed(tokens[:, None]), cache.grid, position)
        cos = self.rope_cos[position : position + 1]
        sin = self.rope_sin[position : position + 1]
        for layer, block in enumerate(self.blocks):
            x = block(x, cos, sin, 0, None, cache, layer)
        cache.length = position + 1
        return self.norm(x[:, 0])

    def logits_slice(self, hidden: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """Logits of vocabulary ids ``[lo, hi)`` only: the rest of the head is never read."""
        return hidden @ self.head.weight[:, lo:hi]

    # ------------------------------------------------------------------ checkpoints

    def save_pretrained(self, directory: str | Path, vocab: Any) -> Path:
        """safetensors weights, ``config.json`` and the vocabulary table ``tokens.json``."""
        from videopoet.core.lm_checkpoint import save_lm

        return save_lm(self, directory, vocab)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        registry: Any = None,
        visual: Any = None,
        audio: Any = None,
        device: str | torch.device = "cpu",
    ) -> PrefixLM:
        """Load a :meth:`save_pretrained` directory; its vocabulary is ``model.vocab``.

        The saved token table is rebuilt against the installed plugins (or the tokenizer
        specs given as ``visual`` / ``audio``): any conflict is a VocabularyError.
        """
        from videopoet.core.lm_checkpoint import load_lm

        return load_lm(directory, registry=registry, visual=visual, audio=audio, device=device)


def _combine(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None:
        return b
    a = a.to(torch.bool)
    return a if b is None else a & b.to(a.device)


# --------------------------------------------------------------------------- the loss


class _LinearCrossEntropy(torch.autograd.Function):
    """Sum of cross-entropies of ``hidden @ weight`` with the gradient formed chunk by chunk.

    Forward and gradient share each chunk's logits, so memory stays at one chunk of
    (rows × vocab) and the head costs three matmuls, as an unfused forward + backward would.
    """

    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk):
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start : start + chunk]
            y = labels[start : start + chunk]
            logits = (h @ weight).float()
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, y[:, None])[:, 0]).sum()
            if grad_hidden is None and grad_weight is None:
                continue
            probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            probs[torch.arange(len(y), device=y.device), y] -= 1.0
            probs = probs.to(hidden.dtype)
            if grad_hidden is not None:
                torch.mm(probs, weight.t(), out=grad_hidden[start : start + chunk])
            if grad_weight is not None:
                grad_weight.addmm_(h.t(), probs)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_weight = ctx.saved_tensors
        gh = grad_hidden * grad_total if grad_hidden is not None else None
        gw = grad_weight * grad_total if grad_weight is not None else None
        return gh, gw, None, None


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int = 1024
) -> torch.Tensor:
    """Mean cross-entropy of ``hidden (N, D) @ weight (D, V)`` against ``labels (N,)``."""
    if hidden.shape[0] == 0:
        raise ConfigError("loss positions", 0, "at least one scored target position")
    if labels.numel() and (labels.min() < 0 or labels.max() >= weight.shape[1]):
        raise VocabularyError(
            f"labels span [{int(labels.min())}, {int(labels.max())}], outside the "
            f"vocabulary [0, {weight.shape[1]})"
        )
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        total = _LinearCrossEntropy.apply(hidden, weight, labels, chunk)
    else:
        total = sum(
            F.cross_entropy(
                (hidden[s : s + chunk] @ weight).float(), labels[s : s + chunk], reduction="sum"
            )
            for s in range(0, hidden.shape[0], chunk)
        )
    return total / hidden.shape[0]


_BATCH_KEYS = ("text_embeddings", "text_mask", "text_start", "key_mask", "loss_mask", "grid")


def lm_loss_fn(model: PrefixLM, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """``loss_fn`` for :func:`videopoet.core.training.train`: a batch is a dict holding
    ``tokens`` (B, L) and ``prefix_length`` (int), optionally ``text_embeddings``,
    ``text_mask``, ``text_start``, ``key_mask``, ``loss_mask`` and ``grid``."""
    missing = [k for k in ("tokens", "prefix_length") if k not in batch]
    if missing:
        raise ConfigError("batch", sorted(batch), f"a dict with {missing}")
    prefix = batch["prefix_length"]
    prefix = int(prefix.flatten()[0]) if isinstance(prefix, torch.Tensor) else int(prefix)
    extra = {k: batch[k] for k in _BATCH_KEYS if batch.get(k) is not None}
    return {"loss": model.loss(batch["tokens"], prefix, **extra)}
