"""The super-resolution transformer (paper 3.3, Figure 4, A.3).

A bidirectional, non-autoregressive transformer over the high-resolution (HR) visual tokens of a
clip, conditioned on its low-resolution (LR) tokens and on text embeddings:

- **blocks of three layers**, whose self-attention is local to windows along one axis each:
  vertical (e.g. ``(1, 56, 4)``: one latent frame, a tall thin strip), horizontal
  (``(1, 8, 32)``) and temporal (``(5, 8, 8)``); the windows come from the
  :class:`~videopoet.plugins.superres.config.StageConfig`;
- in every layer, **cross-attention to the LR tokens** of the isomorphic window: the same
  window at ``1 / scale`` of the spatial size, so window ``i`` of the HR grid reads exactly the
  LR tokens of the same region (:mod:`~videopoet.plugins.superres.windows`);
- in every layer, **cross-attention to the text embeddings** (a learned null key is always
  there, so a clip without text, or whose text is dropped for guidance, attends to it alone);
- **token factorization** (MAGVIT-v2): an id of ``K`` bits is ``k`` groups of about ``K / k``
  bits (:class:`Factorization`); each group has its own input embedding (summed) and its own
  output head, and the head's joint distribution over ids is the product of the groups'
  (``2 x 512`` logits instead of ``262,144`` for the paper's 18-bit codebook, ``2 x 32`` for
  the tiny 10-bit one);
- ``lr_in_input`` (our addition, on by default for tiny models): each HR position also gets the
  embedding of the LR token above it, projected, added to its input: a shortcut that small
  models trained briefly learn from faster; guidance drops it with the LR condition.

Memory and time grow linearly with the number of tokens: every attention is inside a window of
fixed size or over the (short) text. ``benchmarks/superres_memory.py`` measures it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from videopoet.core.errors import ConfigError
from videopoet.plugins.superres.config import (
    AXES,
    Shape,
    StageConfig,
    effective_window,
    lr_window,
    split_bits,
)
from videopoet.plugins.superres.windows import merge, partition

# ---------------------------------------------------------------------------- factorization


class Factorization:
    """Ids of ``bits`` bits as ``groups`` values: group ``g`` holds bits ``[start_g, start_g +
    bits_g)`` (the low bits first), so ``id = sum_g value_g << start_g``."""

    def __init__(self, bits: int, groups: int) -> None:
        if not 1 <= groups <= bits:
            raise ConfigError("groups", groups, f"1 to the codebook's {bits} bits")
        self.bits = bits
        self.group_bits = split_bits(bits, groups)
        self.starts = [sum(self.group_bits[:g]) for g in range(groups)]
        self.sizes = [2**b for b in self.group_bits]

    def split(self, ids: torch.Tensor) -> torch.Tensor:
        """``(...)`` ids → ``(..., groups)`` values."""
        ids = ids.long()
        return torch.stack(
            [(ids >> s) & (n - 1) for s, n in zip(self.starts, self.sizes, strict=True)], -1
        )

    def merge(self, values: torch.Tensor) -> torch.Tensor:
        """``(..., groups)`` values → ``(...)`` ids."""
        out = torch.zeros(values.shape[:-1], dtype=torch.long, device=values.device)
        for g, start in enumerate(self.starts):
            out = out | (values[..., g].long() << start)
        return out


def joint_log_probs(group_logits: list[torch.Tensor], factorization: Factorization) -> torch.Tensor:
    """``(..., 2^bits)`` log-probabilities of every id under the factorized heads: the sum of
    each group's log-softmax at the id's value (for tests and small codebooks only)."""
    ids = torch.arange(2**factorization.bits, device=group_logits[0].device)
    values = factorization.split(ids)  # (2^bits, groups)
    total = 0
    for g, logits in enumerate(group_logits):
        total = total + F.log_softmax(logits.float(), -1)[..., values[:, g]]
    return total


# ---------------------------------------------------------------------------- attention


def _xformers():
    """xformers' ops module when importable (CUDA only; the CPU path never needs it)."""
    from videopoet.core.attention import _xformers_ops

    return _xformers_ops()


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Bidirectional attention of ``(N, heads, Lq, Dh)`` queries over ``(N, heads, Lk, Dh)``
    keys; ``key_mask`` ``(N, Lk)`` True where a key may be seen.

    Without a mask, CUDA tensors go through xformers' memory-efficient kernel when it is
    installed; everything else through PyTorch's SDPA (fused kernels on CPU and CUDA).
    """
    if key_mask is None and q.is_cuda:
        xops = _xformers()
        if xops is not None:
            out = xops.memory_efficient_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            )
            return out.transpose(1, 2)
    mask = None if key_mask is None else key_mask[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class Attention(nn.Module):
    """Multi-head attention of ``x`` over ``context`` (itself for self-attention)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        n, lq, c = x.shape
        lk = context.shape[1]
        dh = c // self.heads
        q = self.q(x).view(n, lq, self.heads, dh).transpose(1, 2)
        k, v = self.kv(context).view(n, lk, 2, self.heads, dh).permute(2, 0, 3, 1, 4).unbind(0)
        y = attend(q, k, v, key_mask)
        return self.out(y.transpose(1, 2).reshape(n, lq, c))


class Layer(nn.Module):
    """Windowed self-attention, windowed LR cross-attention, text cross-attention, MLP; each
    pre-norm with a residual."""

    def __init__(self, config: StageConfig) -> None:
        super().__init__()
        d = config.width
        self.norm_self = nn.LayerNorm(d)
        self.self_attn = Attention(d, config.heads)
        self.norm_lr_q = nn.LayerNorm(d)
        self.norm_lr_kv = nn.LayerNorm(d)
        self.lr_attn = Attention(d, config.heads)
        self.norm_text = nn.LayerNorm(d)
        self.text_attn = Attention(d, config.heads)
        self.norm_mlp = nn.LayerNorm(d)
        self.mlp = nn.Sequential(
            nn.Linear(d, config.mlp_dim), nn.GELU(), nn.Linear(config.mlp_dim, d)
        )

    def forward(
        self,
        x: torch.Tensor,
        lr: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        window: Shape,
        lr_win: Shape,
    ) -> torch.Tensor:
        b, t, h, w, c = x.shape
        grid = (t, h, w)
        rows = partition(self.norm_self(x), window)
        x = x + merge(self.self_attn(rows, rows), grid, window)
        rows = partition(self.norm_lr_q(x), window)
        context = partition(self.norm_lr_kv(lr), lr_win)
        x = x + merge(self.lr_attn(rows, context), grid, window)
        flat = x.reshape(b, t * h * w, c)
        flat = flat + self.text_attn(self.norm_text(flat), text, text_mask)
        flat = flat + self.mlp(self.norm_mlp(flat))
        return flat.view(b, t, h, w, c)


# ---------------------------------------------------------------------------- the network


class SuperResTransformer(nn.Module):
    """One stage: ``forward(hr_ids, lr_ids, ...)`` → the logits of each factorized group."""

    def __init__(self, config: StageConfig) -> None:
        super().__init__()
        self.config = config
        d = config.width
        self.factorization = Factorization(config.codebook_bits, config.groups)
        sizes = self.factorization.sizes
        # the last row of each table is [MASK] (high resolution) / [NULL] (low resolution)
        self.hr_embed = nn.ModuleList(nn.Embedding(n + 1, d) for n in sizes)
        self.lr_embed = nn.ModuleList(nn.Embedding(n + 1, d) for n in sizes)
        t, h, w = config.grid
        lt, lh, lw = config.lr_grid
        self.hr_pos = nn.ParameterList(nn.Parameter(torch.zeros(n, d)) for n in (t, h, w))
        self.lr_pos = nn.ParameterList(nn.Parameter(torch.zeros(n, d)) for n in (lt, lh, lw))
        self.lr_to_input = nn.Linear(d, d) if config.lr_in_input else None
        self.text_proj = nn.Linear(config.text_dim, d)
        self.null_text = nn.Parameter(torch.zeros(1, 1, d))
        self.layers = nn.ModuleList(Layer(config) for _ in range(3 * config.blocks))
        self.norm_out = nn.LayerNorm(d)
        self.heads = nn.ModuleList(nn.Linear(d, n) for n in sizes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.trunc_normal_(module.weight, std=0.02)
        for param in [*self.hr_pos, *self.lr_pos, self.null_text]:
            nn.init.trunc_normal_(param, std=0.02)
        depth = math.sqrt(2 * len(self.layers))
        for layer in self.layers:  # residual branches scaled down with depth (GPT-2)
            for out in (layer.self_attn.out, layer.lr_attn.out, layer.text_attn.out, layer.mlp[2]):
                nn.init.trunc_normal_(out.weight, std=0.02 / depth)

    @property
    def device(self) -> torch.device:
        return self.null_text.device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ geometry

    def check_grid(self, grid: Shape) -> Shape:
        """``grid`` if this stage can run on it (no larger than its own, windows dividing it)."""
        grid = tuple(int(g) for g in grid)
        own = self.config.grid
        if len(grid) != 3 or any(g < 1 or g > o for g, o in zip(grid, own, strict=True)):
            raise ConfigError(
                "grid", grid, f"a token grid no larger than the stage's {own} (t, h, w)"
            )
        s = self.config.scale
        if grid[1] % s or grid[2] % s:
            raise ConfigError("grid", grid, f"spatial sides that are multiples of {s}")
        for axis, window in self.config.windows.items():
            window = effective_window(window, grid)
            if any(g % w for g, w in zip(grid, window, strict=True)):
                raise ConfigError(
                    "grid",
                    grid,
                    f"a grid the {axis} window {window} divides (the stage's own "
                    f"{own} or one of its tilings)",
                )
        return grid

    def lr_grid(self, grid: Shape) -> Shape:
        s = self.config.scale
        return (grid[0], grid[1] // s, grid[2] // s)

    def _positions(self, tables: nn.ParameterList, grid: Shape) -> torch.Tensor:
        t, h, w = grid
        pt, ph, pw = tables[0][:t], tables[1][:h], tables[2][:w]
        return pt[:, None, None] + ph[None, :, None] + pw[None, None, :]

    def _embed(self, tables: nn.ModuleList, values: torch.Tensor) -> torch.Tensor:
        return sum(table(values[..., g]) for g, table in enumerate(tables))

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        hr_ids: torch.Tensor,
        lr_ids: torch.Tensor,
        text: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        *,
        hr_masked: torch.Tensor | None = None,
        lr_dropped: torch.Tensor | None = None,
        grid: Shape | None = None,
    ) -> list[torch.Tensor]:
        """Logits ``(B, N, 2^bits_g)`` of each group for every HR position.

        ``hr_ids`` ``(B, N)`` local ids in raster order of ``grid`` (default: the stage's);
        ``hr_masked`` ``(B, N)`` True at [MASK] positions (their ids are ignored); ``lr_ids``
        ``(B, N / scale²)``; ``lr_dropped`` ``(B,)`` True where the LR condition is replaced
        by [NULL] tokens (guidance's unconditional branch, training dropout); ``text``
        ``(B, K, text_dim)`` with ``text_mask`` ``(B, K)``: a row with no True attends only
        to the null text key (no text, or text dropped).
        """
        grid = self.check_grid(grid or self.config.grid)
        lr_grid = self.lr_grid(grid)
        b = hr_ids.shape[0]
        n, n_lr = math.prod(grid), math.prod(lr_grid)
        if hr_ids.shape != (b, n):
            raise ConfigError("hr_ids", tuple(hr_ids.shape), f"(batch, {n}) for the grid {grid}")
        if lr_ids.shape != (b, n_lr):
            raise ConfigError("lr_ids", tuple(lr_ids.shape), f"({b}, {n_lr}) for {lr_grid}")
        fact = self.factorization
        sizes = torch.tensor(fact.sizes, device=hr_ids.device)
        values = fact.split(hr_ids)
        if hr_masked is not None:
            values = torch.where(hr_masked[..., None], sizes, values)
        x = self._embed(self.hr_embed, values).view(b, *grid, -1)
        x = x + self._positions(self.hr_pos, grid)
        lr_values = fact.split(lr_ids)
        if lr_dropped is not None:
            lr_values = torch.where(lr_dropped[:, None, None], sizes, lr_values)
        lr = self._embed(self.lr_embed, lr_values).view(b, *lr_grid, -1)
        lr = lr + self._positions(self.lr_pos, lr_grid)
        if self.lr_to_input is not None:
            s = self.config.scale
            up = lr.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)
            x = x + self.lr_to_input(up)
        keys, key_mask = self._text_keys(b, text, text_mask, x.dtype)
        for i, layer in enumerate(self.layers):
            window = effective_window(getattr(self.config.windows, AXES[i % 3]), grid)
            x = layer(x, lr, keys, key_mask, window, lr_window(window, self.config.scale))
        x = self.norm_out(x.reshape(b, n, -1))
        return [head(x) for head in self.heads]

    def _text_keys(
        self, batch: int, text: torch.Tensor | None, mask: torch.Tensor | None, dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        null = self.null_text.expand(batch, 1, -1).to(dtype)
        always = torch.ones(batch, 1, dtype=torch.bool, device=null.device)
        if text is None:
            return null, always
        if text.shape[0] != batch or text.shape[-1] != self.config.text_dim:
            raise ConfigError(
                "text", tuple(text.shape), f"({batch}, K, {self.config.text_dim}) embeddings"
            )
        if mask is None:
            mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
        keys = torch.cat([null, self.text_proj(text.to(dtype))], 1)
        return keys, torch.cat([always, mask.bool()], 1)


def masked_loss(
    logits: list[torch.Tensor],
    targets: torch.Tensor,
    masked: torch.Tensor,
    factorization: Factorization,
) -> dict[str, torch.Tensor]:
    """MAGVIT's objective: cross-entropy of the masked positions' ids, the sum over the groups
    (the negative log-likelihood of the whole id under the factorized heads), averaged over the
    masked positions; with the share of masked ids predicted exactly (every group's argmax)."""
    values = factorization.split(targets)[masked]  # (M, groups)
    loss = 0
    right = torch.ones(values.shape[0], dtype=torch.bool, device=values.device)
    for g, group in enumerate(logits):
        chosen = group[masked]
        loss = loss + F.cross_entropy(chosen.float(), values[:, g])
        right = right & (chosen.argmax(-1) == values[:, g])
    return {"loss": loss, "accuracy": right.float().mean().detach()}
