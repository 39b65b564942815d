"""Generation: KV cache vs recomputation, seeds, layout-constrained decoding, CFG, batches."""

from __future__ import annotations

import pytest
import torch

from videopoet.core.declarations import Format
from videopoet.core.errors import ConfigError, LayoutError
from videopoet.core.generation import build_prompt, generate, sample_logits
from videopoet.core.model import ModelConfig, PrefixLM
from videopoet.sequences.layout import build_layout

FORMAT = Format(frames=5, height=16, width=16)


pytestmark = pytest.mark.usefixtures("one_thread")


CACHE_TOL = 1e-4  # float32 logits, KV cache vs full recomputation (seen: ~1e-6)


@pytest.fixture(scope="module")
def model(tiny_vocab):
    torch.manual_seed(0)
    return PrefixLM(
        ModelConfig.preset("tiny", vocab_size=tiny_vocab.size, text_dim=8, grid_positions=False)
    ).eval()


def _layout(registry, vocab, task, text_tokens=6):
    spec = registry.task(task)
    extra = {"text_tokens": text_tokens} if spec.prefix.text else {}
    if spec.prefix.audio or spec.target.audio:
        extra["audio_seconds"] = 0.2  # 10 latent frames: short audio spans keep tests fast
    fmt = Format(frames=1, height=16, width=16) if spec.target.visual == "image" else FORMAT
    return build_layout(spec, vocab, fmt, strict_format=False, **extra)


def _inputs(layout, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    content = {
        s.name: torch.randint(
            0, min(hi - lo for lo, hi in s.ranges), (batch, s.length), generator=g
        )
        for s in layout.content_spans
        if not s.target
    }
    text = torch.randn(batch, 4, 8, generator=g) if layout.text_span is not None else None
    return {"content": content, "text_embeddings": text, "batch_size": batch}


def test_kv_cache_logits_equal_full_recomputation(model, registry, tiny_vocab):
    layout = _layout(registry, tiny_vocab, "avcont")  # visual + audio prefix and target
    inputs = _inputs(layout, batch=2)
    ids = generate(model, layout, tiny_vocab, seed=0, progress=False, **inputs)
    prompt = build_prompt(layout, inputs["content"], batch_size=2)
    sequence = torch.cat([prompt.tokens, ids], dim=1)
    prefix = layout.prefix_length
    with torch.no_grad():
        full = model(sequence, prefix)  # recomputed once over the whole sequence
        cache = model.new_cache(2, sequence.shape[1])
        hidden = model.hidden_states(prompt.tokens, prefix, cache=cache)[:, -1]
        worst = 0.0
        for step in range(layout.target_length):
            step_logits = model.logits_slice(hidden, 0, model.config.vocab_size)
            worst = max(worst, float((step_logits - full[:, prefix - 1 + step]).abs().max()))
            if step + 1 < layout.target_length:
                hidden = model.decode_step(ids[:, step], cache)
    assert worst < CACHE_TOL


@pytest.mark.parametrize("task", ["t2v", "v2a"])
def test_cache_and_recompute_sample_the_same_tokens(model, registry, tiny_vocab, task):
    layout = _layout(registry, tiny_vocab, task)
    inputs = _inputs(layout)
    cached = generate(model, layout, seed=5, progress=False, **inputs)
    again = generate(model, layout, seed=5, progress=False, **inputs)
    slow = generate(model, layout, seed=5, use_cache=False, progress=False, **inputs)
    other = generate(model, layout, seed=6, progress=False, **inputs)
    assert torch.equal(cached, again)  # same seed, same tokens
    assert torch.equal(cached, slow)
    assert not torch.equal(cached, other)


@pytest.mark.parametrize("task", ["t2v", "i2v", "v2a", "a2v", "avcont", "uncond", "t2i", "fp"])
def test_layout_drives_decoding_and_the_result_decodes(model, registry, tiny_vocab, task):
    layout = _layout(registry, tiny_vocab, task)
    # a head that prefers reserved and wrong-modality ids: unconstrained sampling would
    # pick structural tokens inside content spans; constrained decoding never does
    biased = PrefixLM(model.config).eval()
    biased.load_state_dict(model.state_dict())
    with torch.no_grad():
        for book in tiny_vocab.codebooks:
            biased.head.weight[:, book.start : book.stop] = 0.0
        biased.head.weight[:, :256] = torch.randn(model.config.d_model, 256) * 50
    ids = generate(biased, layout, seed=0, progress=False, **_inputs(layout))
    prefix = layout.prefix_length
    for step in range(layout.target_length):
        token = layout.tokens[prefix + step]
        if token >= 0:
            assert (ids[:, step] == token).all()
        else:
            lo, hi = layout.allowed[prefix + step]
            assert ((ids[:, step] >= lo) & (ids[:, step] < hi)).all()
    parts = layout.split(ids)
    assert set(parts) == {s.name for s in layout.content_spans if s.target}


def test_cfg_scale_one_equals_plain_conditional_sampling(model, registry, tiny_vocab):
    layout = _layout(registry, tiny_vocab, "t2v")
    inputs = _inputs(layout)
    plain = generate(model, layout, seed=3, progress=False, **inputs)
    # the unconditional branch runs beside the conditional one, at scale 1
    guided = generate(model, layout, seed=3, cfg_scale=1.0, guide=True, progress=False, **inputs)
    assert torch.equal(plain, guided)
    strong = generate(model, layout, seed=3, cfg_scale=5.0, progress=False, **inputs)
    assert not torch.equal(plain, strong)


@pytest.mark.parametrize("task", ["t2v", "v2a", "a2v"])
def test_scale_zero_is_the_unconditional_model(model, registry, tiny_vocab, task):
    """At scale 0 the guided logits are the unconditional ones: the dropped input (text,
    video or audio per the task's cfg_drop) must not influence the result."""
    layout = _layout(registry, tiny_vocab, task)
    a, b = _inputs(layout, batch=1, seed=1), _inputs(layout, batch=1, seed=2)
    options = dict(cfg_scale=0.0, temperature=0, progress=False)
    out_a = generate(model, layout, **a, **options)
    out_b = generate(model, layout, **b, **options)
    assert torch.equal(out_a, out_b)
    cond_a = generate(model, layout, temperature=0, progress=False, **a)
    cond_b = generate(model, layout, temperature=0, progress=False, **b)
    assert not torch.equal(cond_a, cond_b)


def test_batch_of_different_prompts_matches_one_by_one(model, registry, tiny_vocab):
    layout = _layout(registry, tiny_vocab, "t2v")
    inputs = _inputs(layout, batch=3)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[1, 2:] = False  # a shorter caption in the middle row
    batched = generate(
        model, layout, temperature=0, text_mask=mask, cfg_scale=2.0, progress=False, **inputs
    )
    for row in range(3):
        alone = generate(
            model,
            layout,
            text_embeddings=inputs["text_embeddings"][row : row + 1],
            text_mask=mask[row : row + 1],
            temperature=0,
            cfg_scale=2.0,
            progress=False,
        )
        assert torch.equal(batched[row : row + 1], alone)


def test_sampling_options():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 50, generator=g)
    greedy = sample_logits(logits, temperature=0)
    assert torch.equal(greedy, logits.argmax(-1))
    assert torch.equal(sample_logits(logits, top_k=1, generator=g), greedy)
    assert torch.equal(sample_logits(logits, top_p=1e-6, generator=g), greedy)
    top5 = logits.topk(5).indices
    for _ in range(20):
        pick = sample_logits(logits, temperature=2.0, top_k=5, generator=g)
        assert (top5 == pick[:, None]).any(-1).all()
    probs = logits.softmax(-1)
    sorted_probs, order = probs.sort(-1, descending=True)
    keep = (sorted_probs.cumsum(-1) - sorted_probs) < 0.5
    for _ in range(20):
        pick = sample_logits(logits, top_p=0.5, generator=g)
        allowed = [set(order[r][keep[r]].tolist()) for r in range(4)]
        assert all(int(pick[r]) in allowed[r] for r in range(4))


def test_bad_generation_inputs_are_reported(model, registry, tiny_vocab):
    t2v = _layout(registry, tiny_vocab, "t2v")
    with pytest.raises(ConfigError, match="text_embeddings"):
        generate(model, t2v, progress=False)
    with pytest.raises(ConfigError, match="temperature"):
        generate(model, t2v, temperature=-1, progress=False, **_inputs(t2v))
    uncond = _layout(registry, tiny_vocab, "uncond")
    with pytest.raises(ConfigError, match="cfg_scale"):
        generate(model, uncond, cfg_scale=2.0, progress=False)
    v2a = _layout(registry, tiny_vocab, "v2a")
    with pytest.raises(LayoutError, match="visual_in"):
        generate(model, v2a, progress=False)
    with pytest.raises(ConfigError, match="batch"):
        inputs = _inputs(t2v, batch=2)
        generate(model, t2v, progress=False, **{**inputs, "batch_size": 3})


def test_a_grid_model_decodes_with_its_layouts_grid(registry, tiny_vocab):
    torch.manual_seed(0)
    config = ModelConfig.preset(
        "tiny", vocab_size=tiny_vocab.size, text_dim=8, grid_positions=True, grid_size=8
    )
    model = PrefixLM(config).eval()
    layout = _layout(registry, tiny_vocab, "avcont")
    inputs = _inputs(layout)
    cached = generate(model, layout, seed=5, progress=False, **inputs)
    slow = generate(model, layout, seed=5, use_cache=False, progress=False, **inputs)
    assert torch.equal(cached, slow)  # the cache steps through the same grid
    prompt = build_prompt(layout, inputs["content"], batch_size=2)
    sequence = torch.cat([prompt.tokens, cached], dim=1)
    grid = layout.grid_tensor()
    with torch.no_grad():
        full = model(sequence, layout.prefix_length, grid=grid)
        blind = model(sequence, layout.prefix_length, grid=torch.zeros_like(grid))
    assert not torch.allclose(full, blind)  # what is generated depends on the places
