"""The prefix-LM transformer: config, text slots, the target-only loss, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from videopoet.core.declarations import AudioTokenizerSpec, VisualTokenizerSpec
from videopoet.core.errors import ConfigError, VocabularyError
from videopoet.core.model import ModelConfig, PrefixLM, linear_cross_entropy
from videopoet.core.vocabulary import Vocabulary

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tiny_vocab):
    torch.manual_seed(0)
    config = ModelConfig.preset(
        "tiny", vocab_size=tiny_vocab.size, text_dim=8, grid_positions=False
    )
    return PrefixLM(config)


def _tokens(vocab_size, batch=2, length=24, seed=0):
    return torch.randint(
        0, vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed)
    )


def test_presets_and_parameter_count(tiny_vocab):
    tiny = ModelConfig.preset("tiny", vocab_size=tiny_vocab.size)
    model = PrefixLM(tiny)
    assert model.num_parameters() == tiny.parameter_count()
    assert 0.5e6 < model.num_parameters() < 2e6  # the ~1M-parameter test model
    big = ModelConfig.preset("8b", vocab_size=266_496, text_dim=4096)
    assert 7e9 < big.parameter_count() < 9.5e9
    one = ModelConfig.preset("1b", vocab_size=266_496)
    assert 0.9e9 < one.parameter_count() < 2e9


def test_bad_config_is_reported():
    with pytest.raises(ConfigError, match="preset"):
        ModelConfig.preset("huge", vocab_size=10)
    with pytest.raises(ValidationError, match="divisible"):
        ModelConfig(vocab_size=10, d_model=100, n_heads=3)
    with pytest.raises(ValidationError, match="extra"):
        ModelConfig(vocab_size=10, d_modle=64)


def test_loss_is_cross_entropy_of_target_positions_only(model):
    tokens = _tokens(model.config.vocab_size)
    text = torch.randn(2, 5, 8)
    prefix = 10
    loss = model.loss(tokens, prefix, text)
    logits = model(tokens, prefix, text)
    reference = F.cross_entropy(
        logits[:, prefix - 1 : -1].reshape(-1, logits.shape[-1]), tokens[:, prefix:].reshape(-1)
    )
    assert abs(loss.item() - reference.item()) < 1e-5
    # and its gradients are the reference's (what the prefix and target see is checked below)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    ref_grads = torch.autograd.grad(reference, list(model.parameters()))
    for a, b in zip(grads, ref_grads, strict=True):
        assert (a - b).abs().max() < 1e-5


def test_prefix_outputs_ignore_targets_and_targets_see_the_whole_prefix(model):
    """Perturbation check of the prefix LM through the whole model (text slots included)."""
    vocab = model.config.vocab_size
    tokens = _tokens(vocab, batch=1, length=24, seed=4)
    text = torch.randn(1, 5, 8, generator=torch.Generator().manual_seed(4))
    prefix = 10  # <bos> <task> <bot_i>, 5 text slots (3..7), two more prefix tokens

    def logits(ids):
        with torch.no_grad():
            return model(ids, prefix, text)

    base = logits(tokens)
    for position in (prefix, 15, 23):  # the first target token, one inside, the last
        changed = tokens.clone()
        changed[0, position] = (changed[0, position] + 1) % vocab
        moved = (logits(changed) - base).abs().amax(-1)[0]
        assert (moved[:position] == 0).all(), position  # every prefix output, earlier targets
        assert (moved[position:] > 1e-6).all(), position  # it and every later target
    for position in (0, 1, 8, prefix - 1):  # prefix tokens outside the text slots
        changed = tokens.clone()
        changed[0, position] = (changed[0, position] + 1) % vocab
        moved = (logits(changed) - base).abs().amax(-1)[0]
        # bidirectional prefix: earlier prefix positions move too; causal target: all move
        assert (moved > 1e-6).all(), position
    with torch.no_grad():
        before = model.loss(tokens, prefix, text)
        changed = tokens.clone()
        changed[0, prefix - 1] = (changed[0, prefix - 1] + 1) % vocab
        assert model.loss(changed, prefix, text) != before  # the targets' context changed


def test_chunked_loss_matches_unchunked():
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(37, 16, generator=g, requires_grad=True)
    weight = torch.randn(16, 50, generator=g, requires_grad=True)
    labels = torch.randint(0, 50, (37,), generator=g)
    fused = linear_cross_entropy(hidden, weight, labels, chunk=8)
    plain = F.cross_entropy(hidden @ weight, labels)
    assert abs(fused.item() - plain.item()) < 1e-5
    (2 * fused).backward()
    gh, gw = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    (2 * plain).backward()
    assert (gh - hidden.grad).abs().max() < 1e-5 and (gw - weight.grad).abs().max() < 1e-5
    with pytest.raises(VocabularyError):
        linear_cross_entropy(hidden, weight, labels + 50)


def test_loss_mask_narrows_scored_positions(model):
    tokens = _tokens(model.config.vocab_size, batch=1)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[0, 15] = True
    with torch.no_grad():
        loss = model.loss(tokens, 10, loss_mask=mask)
        logits = model(tokens, 10)
    expected = F.cross_entropy(logits[0, 14:15], tokens[0, 15:16])
    assert abs(loss.item() - expected.item()) < 1e-5


def test_text_slots_are_projected_and_padding_is_invisible(model):
    tokens = _tokens(model.config.vocab_size, batch=1)
    text = torch.randn(1, 6, 8)
    mask = torch.tensor([[True, True, True, True, False, False]])
    with torch.no_grad():
        base = model.hidden_states(tokens, 12, text, mask)
        other = text.clone()
        other[0, 4:] = torch.randn(2, 8)  # padded slots: must not matter anywhere
        same = model.hidden_states(tokens, 12, other, mask)
        other[0, 0] += 1.0  # a real slot: moves every position (prefix is bidirectional)
        moved = model.hidden_states(tokens, 12, other, mask)
    assert torch.equal(base, same)
    assert ((moved - base).abs().amax(-1) > 1e-5).all()
    # the token ids at the text slots are ignored: their embeddings are replaced
    changed = tokens.clone()
    changed[0, 3:9] = 5
    with torch.no_grad():
        assert torch.equal(model.hidden_states(changed, 12, text, mask), base)


def test_bad_text_inputs_are_config_errors(model):
    tokens = _tokens(model.config.vocab_size, batch=1)
    with pytest.raises(ConfigError, match="text_embeddings"):
        model.hidden_states(tokens, 12, torch.randn(1, 6, 9))
    with pytest.raises(ConfigError, match="text_mask"):
        model.hidden_states(tokens, 12, torch.randn(1, 6, 8), torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(ConfigError, match="text_start"):
        model.hidden_states(tokens, 12, torch.randn(1, 6, 8), text_start=20)
    with pytest.raises(ConfigError, match="prefix_length"):
        model.loss(tokens, 24)


def test_save_and_load_round_trip(model, tiny_vocab, registry, tmp_path):
    model.save_pretrained(tmp_path, tiny_vocab)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["config.json", "model.safetensors", "tokens.json"]
    assert json.loads((tmp_path / "tokens.json").read_text()) == json.loads(
        json.dumps(tiny_vocab.to_dict())
    )
    loaded = PrefixLM.from_pretrained(
        tmp_path, registry=registry, visual=tiny_vocab.visual, audio=tiny_vocab.audio
    )
    assert loaded.vocab.tokens == tiny_vocab.tokens
    tokens = _tokens(model.config.vocab_size, batch=1)
    with torch.no_grad():
        assert torch.equal(loaded(tokens, 10), model.eval()(tokens, 10))


def test_loading_against_conflicting_tokenizers_fails(model, tiny_vocab, registry, tmp_path):
    model.save_pretrained(tmp_path, tiny_vocab)
    other = AudioTokenizerSpec(name="tiny_audio", levels=3, codebook_size=16)
    with pytest.raises(VocabularyError, match="conflicts"):
        PrefixLM.from_pretrained(tmp_path, registry=registry, visual=tiny_vocab.visual, audio=other)
    # a shifted special-token table is refused too
    table = json.loads((tmp_path / "tokens.json").read_text())
    table["tokens"]["<bos>"], table["tokens"]["<pad>"] = 0, 1
    (tmp_path / "tokens.json").write_text(json.dumps(table))
    loaded = PrefixLM.from_pretrained(
        tmp_path, registry=registry, visual=tiny_vocab.visual, audio=tiny_vocab.audio
    )
    assert loaded.vocab.id("<bos>") == 0  # the saved table wins: ids never shift


def test_saving_with_a_mismatched_vocabulary_fails(model, registry, tmp_path):
    wrong = Vocabulary(
        registry.tasks.values(),
        VisualTokenizerSpec(name="tiny_visual", codebook_bits=5),
        AudioTokenizerSpec(name="tiny_audio", levels=2, codebook_size=16),
    )
    with pytest.raises(VocabularyError):
        model.save_pretrained(tmp_path, wrong)


def test_unknown_tokenizer_in_a_checkpoint_is_reported(model, tiny_vocab, registry, tmp_path):
    model.save_pretrained(tmp_path, tiny_vocab)
    with pytest.raises(KeyError, match="tiny_visual"):
        PrefixLM.from_pretrained(tmp_path, registry=registry)


def test_lm_loss_fn_feeds_the_shared_trainer(model):
    from videopoet.core.model import lm_loss_fn

    tokens = _tokens(model.config.vocab_size, batch=1)
    text = torch.randn(1, 5, 8)
    out = lm_loss_fn(
        model, {"tokens": tokens, "prefix_length": torch.tensor(10), "text_embeddings": text}
    )
    assert torch.allclose(out["loss"], model.loss(tokens, 10, text))
    with pytest.raises(ConfigError, match="prefix_length"):
        lm_loss_fn(model, {"tokens": tokens})


# ---------------------------------------------------------------------------- grid positions


@pytest.fixture(scope="module")
def grid_model(tiny_vocab):
    torch.manual_seed(0)
    config = ModelConfig.preset(
        "tiny", vocab_size=tiny_vocab.size, text_dim=8, grid_positions=True, grid_size=8
    )
    return PrefixLM(config)


def _grid(length=24, seed=0):
    return torch.randint(0, 9, (length, 3), generator=torch.Generator().manual_seed(seed))


def test_grid_positions_count_and_move_only_placed_tokens(grid_model):
    assert grid_model.num_parameters() == grid_model.config.parameter_count()
    tokens, grid = _tokens(grid_model.config.vocab_size), _grid()
    grid[:4] = 0
    with torch.no_grad():
        base = grid_model.hidden_states(tokens, 24, grid=grid)  # all prefix: bidirectional
        moved = grid.clone()
        moved[10] = grid[10] % 8 + 1  # another place on every axis
        other = grid_model.hidden_states(tokens, 24, grid=moved)
        # a (B, L, 3) grid is the same as the shared (L, 3) one
        rows = grid_model.hidden_states(tokens, 24, grid=grid.expand(2, -1, -1))
    assert not torch.allclose(base, other)  # the place is read
    assert torch.equal(base, rows)
    # the "no place" embedding is zero and stays zero under training
    for table in (grid_model.grid_time, grid_model.grid_row, grid_model.grid_col):
        assert not table.weight[0].any()
    loss = grid_model.loss(tokens, 12, grid=grid)
    loss.backward()
    assert not grid_model.grid_time.weight.grad[0].any()
    grid_model.zero_grad()


def test_a_grid_model_asks_for_its_grid_by_name(grid_model, model):
    tokens = _tokens(grid_model.config.vocab_size)
    with pytest.raises(ConfigError, match="grid.*grid_positions"):
        grid_model.hidden_states(tokens, 12)
    with pytest.raises(ConfigError, match="grid_size=8"):
        grid_model.hidden_states(tokens, 12, grid=_grid() + 1)
    with pytest.raises(ConfigError, match="grid"):
        grid_model.hidden_states(tokens, 12, grid=_grid(length=10))
    # a model without grid positions ignores a grid: shards carry one for any model
    with torch.no_grad():
        assert torch.equal(
            model.hidden_states(tokens, 12, grid=_grid()), model.hidden_states(tokens, 12)
        )


def test_grid_model_saves_and_loads(grid_model, tiny_vocab, registry, tmp_path):
    grid_model.save_pretrained(tmp_path, tiny_vocab)
    loaded = PrefixLM.from_pretrained(
        tmp_path, registry=registry, visual=tiny_vocab.visual, audio=tiny_vocab.audio
    )
    assert loaded.config.grid_positions and loaded.config.grid_size == 8
    tokens, grid = _tokens(grid_model.config.vocab_size), _grid()
    with torch.no_grad():
        assert torch.equal(loaded(tokens, 12, grid=grid), grid_model(tokens, 12, grid=grid))
