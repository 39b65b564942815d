"""Sampling from the prefix LM, driven by a :class:`~videopoet.sequences.layout.Layout`.

One forward over the prefix fills a preallocated KV cache; then the target is decoded token by
token. The layout decides every position: a structural token (``<bov_o>``, ``<eov_o>``,
``<boa_o>``, ...) is forced without computing the head at all, and a content token is sampled
only from its position's vocabulary range (the visual codebook inside a visual span, the right
RVQ level inside an audio span), computing only that slice of the output head. A softmax over
the allowed ids equals the full softmax renormalised over them, so this is exact, and any
sequence it returns decodes with :meth:`Layout.split`.

Classifier-free guidance: the unconditional rows (the task's ``cfg_drop`` inputs removed) run
beside the conditional rows in the same forward, and the guided logits are
``cond + (scale - 1) · (cond - uncond)``, which is exactly ``cond`` at scale 1. Dropping an
input: text slots are masked out as keys and their embeddings zeroed; a visual or audio
condition span has its tokens replaced by ``<pad>`` and is masked out as keys (its begin/end
markers stay, so the model still sees which task it is doing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from videopoet.core.errors import ConfigError, LayoutError, VocabularyError

PAD_ID = 0  #: ``<pad>`` is id 0 by construction of the vocabulary


def _condition_spans(layout, name: str) -> list[str]:
    """Span names a ``cfg_drop`` entry switches off: ``visual`` means every visual input."""
    if name == "audio":
        names = ["audio_in"]
    elif name == "visual":
        names = [v.span for v in layout.task.prefix.visual_inputs]
    else:
        names = [f"{name}_in"]
    return [n for n in names if layout.has(n)]


def droppable_conditions(layout) -> list[str]:
    """The task's ``cfg_drop`` conditions present in this layout: what guidance can drop (an
    inpainting layout without a prompt has none, though the task declares ``text``)."""
    drop = list(layout.task.cfg_drop)
    present = [n for n in drop if n == "text" and layout.text_span is not None]
    return present + [n for n in drop if n != "text" and _condition_spans(layout, n)]


@dataclass
class Prompt:
    """The prefix rows of one call: conditional rows first, then unconditional ones."""

    tokens: torch.Tensor  # (R, P)
    text: torch.Tensor | None  # (R, K, text_dim)
    text_mask: torch.Tensor | None  # (R, K)
    text_start: int | None
    key_mask: torch.Tensor | None  # (R, P), dropped condition spans switched off
    batch: int  # B conditional rows
    guided: bool  # True: rows [B, 2B) are the unconditional branch


def build_prompt(
    layout,
    content: dict[str, torch.Tensor] | None = None,
    text_embeddings: torch.Tensor | None = None,
    text_mask: torch.Tensor | None = None,
    batch_size: int | None = None,
    guided: bool = False,
    pad_id: int = PAD_ID,
) -> Prompt:
    """Prefix token ids and masks for a batch of prompts (and their unconditional twins)."""
    content = dict(content or {})
    inputs = [s for s in layout.content_spans if not s.target]
    names = {s.name for s in inputs}
    if set(content) != names:
        raise LayoutError(
            f"{layout.task.name}: prefix content for spans {sorted(names)} expected, got "
            f"{sorted(content)}"
        )
    text_span = layout.text_span
    if text_span is None and text_embeddings is not None:
        raise ConfigError("text_embeddings", "given", f"none (task {layout.task.name} has no text)")
    if text_span is not None and text_embeddings is None:
        raise ConfigError(
            "text_embeddings", None, f"(batch, ≤{text_span.length}, dim) for {layout.task.name}"
        )
    batch = _batch_size(content, text_embeddings, batch_size)
    filled = {k: torch.as_tensor(v).reshape(batch, -1) for k, v in content.items()}
    for span in layout.content_spans:
        if span.target:
            filled[span.name] = torch.zeros(batch, span.length, dtype=torch.long)
    tokens = layout.fill(filled)[:, : layout.prefix_length]

    text = mask = None
    if text_span is not None:
        text, mask = _pad_text(text_embeddings, text_mask, text_span.length, batch)
    key_mask = None
    if guided:
        drop = list(layout.task.cfg_drop)
        dropped = droppable_conditions(layout)
        if not dropped:
            raise ConfigError(
                "cfg_scale",
                "a value other than 1",
                f"1.0: task {layout.task.name} has no condition to drop for guidance "
                f"(cfg_drop={list(drop)})",
            )
        uncond = tokens.clone()
        key_mask = torch.ones(2 * batch, layout.prefix_length, dtype=torch.bool)
        for name in dropped:
            if name == "text":
                continue
            for span_name in _condition_spans(layout, name):
                span = layout.span(span_name)
                uncond[:, span.start : span.stop] = pad_id
                key_mask[batch:, span.start : span.stop] = False
        tokens = torch.cat([tokens, uncond])
        if text is not None:
            drop_text = "text" in dropped
            text = torch.cat([text, torch.zeros_like(text) if drop_text else text])
            mask = torch.cat([mask, torch.zeros_like(mask) if drop_text else mask])
        if bool(key_mask.all()):
            key_mask = None
    return Prompt(
        tokens=tokens,
        text=text,
        text_mask=mask,
        text_start=text_span.start if text_span is not None else None,
        key_mask=key_mask,
        batch=batch,
        guided=guided,
    )


def _batch_size(content, text_embeddings, batch_size) -> int:
    sizes = {
        torch.as_tensor(v).reshape(-1, torch.as_tensor(v).shape[-1]).shape[0]
        for v in content.values()
    }
    if text_embeddings is not None:
        sizes.add(text_embeddings.shape[0])
    if batch_size is not None:
        if batch_size < 1:
            raise ConfigError("batch_size", batch_size, "at least 1")
        sizes.add(batch_size)
    if len(sizes) > 1:
        raise ConfigError("batch", sorted(sizes), "one batch size shared by every input")
    return sizes.pop() if sizes else 1


def _pad_text(embeddings, mask, slots, batch):
    if embeddings.dim() != 3 or embeddings.shape[0] != batch or embeddings.shape[1] > slots:
        raise ConfigError(
            "text_embeddings", tuple(embeddings.shape), f"(batch={batch}, ≤{slots}, dim)"
        )
    k = embeddings.shape[1]
    if mask is None:
        mask = torch.ones(batch, k, dtype=torch.bool, device=embeddings.device)
    if mask.shape != (batch, k):
        raise ConfigError("text_mask", tuple(mask.shape), f"({batch}, {k})")
    if k < slots:  # fewer text tokens than slots: the rest are padding, masked out
        pad = embeddings.new_zeros(batch, slots - k, embeddings.shape[2])
        embeddings = torch.cat([embeddings, pad], dim=1)
        mask = torch.cat([mask.bool(), mask.new_zeros(batch, slots - k, dtype=torch.bool)], 1)
    return embeddings, mask.bool()


def sample_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One index per row of ``logits`` (B, n): greedy at temperature 0, else sampled."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    index = None
    if top_k is not None and top_k < logits.shape[-1]:
        logits, index = logits.topk(top_k, dim=-1)  # sorted, descending
    if top_p is not None and top_p < 1.0:
        if index is None:
            logits, index = logits.sort(dim=-1, descending=True)
        probs = logits.softmax(dim=-1)
        # keep the smallest head of the sorted list whose mass reaches top_p (never empty)
        drop = probs.cumsum(dim=-1) - probs >= top_p
        logits = logits.masked_fill(drop, float("-inf"))
    choice = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)
    return choice[:, 0] if index is None else index.gather(1, choice)[:, 0]


def _check_options(cfg_scale, temperature, top_k, top_p) -> None:
    if cfg_scale < 0:
        raise ConfigError("cfg_scale", cfg_scale, "a scale ≥ 0 (1 = no guidance)")
    if temperature < 0:
        raise ConfigError("temperature", temperature, "≥ 0 (0 = greedy)")
    if top_k is not None and top_k < 1:
        raise ConfigError("top_k", top_k, "a positive integer or None")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError("top_p", top_p, "a probability in (0, 1] or None")


@torch.inference_mode()
def generate(
    model,
    layout,
    vocab=None,
    *,
    content: dict[str, torch.Tensor] | None = None,
    text_embeddings: torch.Tensor | None = None,
    text_mask: torch.Tensor | None = None,
    batch_size: int | None = None,
    cfg_scale: float = 1.0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    guide: bool | None = None,
    progress: bool = True,
    on_token: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Generate the target of ``layout`` for a batch of prompts: global ids (B, target_length).

    ``content``: tokenizer-local ids (B, span length) of each prefix content span (e.g.
    ``visual_in``); ``text_embeddings`` (B, K ≤ text slots, text_dim) and ``text_mask`` (B, K)
    fill the text slots. ``batch_size`` sets B for a prompt with no inputs (unconditional).
    ``cfg_scale`` ≠ 1 runs the unconditional branch beside the conditional one (``guide``
    forces it on or off). ``temperature`` 0 is greedy. The same ``seed`` gives the same tokens.
    ``use_cache=False`` recomputes the whole sequence at every step (a reference, slow).
    ``layout.split(ids)`` turns the result into tokenizer-local ids per span. ``on_token(step,
    ids)`` is called after each target position with the ids so far (B, step + 1), e.g. to
    decode each finished latent frame while the rest is generated (progressive preview).
    """
    _check_options(cfg_scale, temperature, top_k, top_p)
    if vocab is not None and vocab.size != model.config.vocab_size:
        raise VocabularyError(
            f"the vocabulary has {vocab.size} ids, the model {model.config.vocab_size}"
        )
    guided = cfg_scale != 1.0 if guide is None else guide
    pad_id = vocab.id("<pad>") if vocab is not None else PAD_ID
    prompt = build_prompt(layout, content, text_embeddings, text_mask, batch_size, guided, pad_id)
    device = model.device
    rows = prompt.tokens.shape[0]
    batch, prefix, target = prompt.batch, layout.prefix_length, layout.target_length
    tokens = prompt.tokens.to(device)
    text = prompt.text.to(device) if prompt.text is not None else None
    text_mask_ = prompt.text_mask.to(device) if prompt.text_mask is not None else None
    key_mask = prompt.key_mask.to(device) if prompt.key_mask is not None else None
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)

    grid = layout.grid_tensor().to(device)

    def forward_all(sequence: torch.Tensor, cache=None) -> torch.Tensor:
        mask = key_mask
        if mask is not None and sequence.shape[1] > prefix:
            grow = mask.new_ones(rows, sequence.shape[1] - prefix)
            mask = torch.cat([mask, grow], dim=1)
        hidden = model.hidden_states(
            sequence,
            prefix,
            text,
            text_mask_,
            text_start=prompt.text_start,
            key_mask=mask,
            cache=cache,
            grid=grid,
        )
        return hidden[:, -1]

    cache = model.new_cache(rows, prefix + target) if use_cache else None
    hidden = forward_all(tokens, cache)
    out = torch.empty(batch, target, dtype=torch.long, device=device)
    sequence = tokens
    for step in tqdm(range(target), desc="generate", disable=not progress, leave=False):
        position = prefix + step
        forced = layout.tokens[position]
        if forced >= 0:
            chosen = torch.full((batch,), forced, dtype=torch.long, device=device)
        else:
            lo, hi = layout.allowed[position]
            if lo < 0:
                raise LayoutError(f"position {position} is neither a token nor content")
            logits = model.logits_slice(hidden, lo, hi).float()
            if prompt.guided:
                cond, uncond = logits[:batch], logits[batch:]
                logits = cond + (cfg_scale - 1.0) * (cond - uncond)
            chosen = sample_logits(logits, temperature, top_k, top_p, generator) + lo
        out[:, step] = chosen
        if on_token is not None:
            on_token(step, out[:, : step + 1])
        if step + 1 == target:
            break
        fed = chosen.repeat(rows // batch)
        if use_cache:
            hidden = model.decode_step(fed, cache)
        else:
            sequence = torch.cat([sequence, fed[:, None]], dim=1)
            hidden = forward_all(sequence)
    return out
