"""Non-autoregressive sampling of high-resolution tokens (MaskGIT / MAGVIT-v2, paper A.3).

Every high-resolution token starts as [MASK]. At each of ``steps`` steps the model predicts
every masked token at once; a token is drawn for each (its factorized groups drawn apart, at
``temperature``; 0 takes the most likely value), scored by its log-probability, and the
least confident of the new tokens are masked again, so that after step ``s`` a share
``cos(pi/2 · (s+1) / steps)`` of the grid is still masked (the cosine schedule: few tokens
early, many late; none after the last step). ``choice_temperature`` adds Gumbel noise to the
scores that picks what stays, annealed to 0 over the steps (MaskGIT).

Classifier-free guidance, separately for the text and the low-resolution (LR) condition
(paper 3.3): with ``l(lr, text)`` the logits of a branch and ``∅`` a dropped condition,

    l = l(∅, ∅) + lr_scale · (l(lr, ∅) − l(∅, ∅)) + text_scale · (l(lr, text) − l(lr, ∅))

so ``1.0 / 1.0`` is the plain conditional model, and a scale of 1 costs no extra branch (the
paper: 4.0 text / 1.0 LR at stage one, 8.0 / 2.0 at stage two). The branches run as one batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from videopoet.core.errors import ConfigError


def mask_schedule(steps: int, tokens: int) -> list[int]:
    """Tokens still masked after each step: ``floor(N · cos(pi/2 · (s+1) / steps))``, strictly
    decreasing while any is masked, 0 after the last step."""
    left, out = tokens, []
    for s in range(steps):
        target = math.floor(tokens * math.cos(math.pi / 2 * (s + 1) / steps))
        if s == steps - 1:
            target = 0
        left = max(0, min(target, left - 1))
        out.append(left)
    return out


def _guided(
    model: torch.nn.Module,
    ids: torch.Tensor,
    masked: torch.Tensor,
    lr_ids: torch.Tensor,
    text: torch.Tensor | None,
    text_mask: torch.Tensor | None,
    grid: tuple[int, int, int],
    text_scale: float,
    lr_scale: float,
) -> list[torch.Tensor]:
    batch = ids.shape[0]
    with_text = text is not None and bool(text_mask is None or text_mask.any())
    branches = [("lr", True, with_text)]  # (name, lr kept, text kept)
    if with_text and (text_scale != 1.0 or lr_scale != 1.0):
        branches.append(("lr_only", True, False))
    if lr_scale != 1.0:
        branches.append(("none", False, False))
    k = len(branches)
    lr_dropped = torch.tensor(
        [not keep for _, keep, _ in branches], device=ids.device
    ).repeat_interleave(batch)
    texts = masks = None
    if text is not None:
        texts = text.repeat(k, 1, 1)
        keep = torch.tensor([t for _, _, t in branches], device=ids.device)
        given = text_mask if text_mask is not None else torch.ones(text.shape[:2], dtype=bool)
        masks = given.to(ids.device).repeat(k, 1) & keep.repeat_interleave(batch)[:, None]
    logits = model(
        ids.repeat(k, 1),
        lr_ids.repeat(k, 1),
        texts,
        masks,
        hr_masked=masked.repeat(k, 1),
        lr_dropped=lr_dropped,
        grid=grid,
    )
    out = []
    for group in logits:
        parts = dict(zip((name for name, _, _ in branches), group.float().chunk(k), strict=True))
        lr_only = parts.get("lr_only", parts["lr"])  # without text the two are one branch
        guided = lr_only + text_scale * (parts["lr"] - lr_only)
        if "none" in parts:
            guided = guided + (lr_scale - 1.0) * (lr_only - parts["none"])
        out.append(guided)
    return out


@torch.no_grad()
def sample_tokens(
    model: torch.nn.Module,
    lr_ids: torch.Tensor,
    text: torch.Tensor | None = None,
    text_mask: torch.Tensor | None = None,
    *,
    grid: tuple[int, int, int] | None = None,
    steps: int = 24,
    text_scale: float = 1.0,
    lr_scale: float = 1.0,
    temperature: float = 1.0,
    choice_temperature: float = 4.5,
    seed: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """High-resolution ids ``(B, N)`` for LR ids ``(B, N / scale²)`` on the HR ``grid``."""
    from tqdm.auto import tqdm

    if steps < 1:
        raise ConfigError("steps", steps, "at least 1")
    for name, value in (("temperature", temperature), ("text_scale", text_scale)):
        if not math.isfinite(value) or value < 0:
            raise ConfigError(name, value, "a finite number >= 0")
    if not math.isfinite(lr_scale) or lr_scale < 0:
        raise ConfigError("lr_scale", lr_scale, "a finite number >= 0")
    grid = model.check_grid(grid or model.config.grid)
    fact = model.factorization
    device = model.device
    lr_ids = lr_ids.to(device)
    if text is not None:
        text = text.to(device)
        text_mask = None if text_mask is None else text_mask.to(device)
    batch, tokens = lr_ids.shape[0], math.prod(grid)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else int(torch.randint(2**62, (1,))))
    ids = torch.zeros(batch, tokens, dtype=torch.long, device=device)
    masked = torch.ones(batch, tokens, dtype=torch.bool, device=device)
    schedule = mask_schedule(steps, tokens)
    for step in tqdm(range(steps), desc="superres", disable=not progress, leave=False):
        logits = _guided(model, ids, masked, lr_ids, text, text_mask, grid, text_scale, lr_scale)
        values, score = [], 0.0
        for group in logits:
            logp = F.log_softmax(group / max(temperature, 1e-6), -1)
            if temperature == 0:
                value = logp.argmax(-1)
            else:
                flat = logp.exp().reshape(-1, logp.shape[-1])
                value = torch.multinomial(flat, 1, generator=generator).view(batch, tokens)
            values.append(value)
            score = score + logp.gather(-1, value[..., None])[..., 0]
        drawn = fact.merge(torch.stack(values, -1))
        ids = torch.where(masked, drawn, ids)
        left = schedule[step]
        if left == 0:
            masked = torch.zeros_like(masked)
            break
        if choice_temperature > 0:
            uniform = torch.rand(score.shape, generator=generator, device=device)
            gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1 - 1e-7)))
            score = score + choice_temperature * (1 - (step + 1) / steps) * gumbel
        score = torch.where(masked, score, torch.full_like(score, math.inf))
        again = score.topk(left, dim=-1, largest=False).indices
        masked = torch.zeros_like(masked).scatter_(1, again, True)
    return ids
