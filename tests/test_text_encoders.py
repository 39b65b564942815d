"""Text encoders: shapes and masks, truncation at 65 tokens, T5 from a local folder, cache."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from videopoet.core.errors import ConfigError, UnknownNameError
from videopoet.plugins.text.cache import CachedTextEncoder, EmbeddingCache
from videopoet.plugins.text.encoders import TextTruncationWarning, build

CAPTIONS = ["a cat on a skateboard", "a red dog runs on the beach at sunset", "rain"]


def words(encoder, tokens: int) -> str:
    """A caption of exactly ``tokens`` tokens for ``encoder`` (special tokens included)."""
    n = tokens
    while encoder.count_tokens(" ".join(["cat"] * n)) > tokens:
        n -= 1
    text = " ".join(["cat"] * n)
    assert encoder.count_tokens(text) == tokens
    return text


def check_truncation(encoder) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", TextTruncationWarning)
        fits = encoder.encode([words(encoder, 64)])  # 64 tokens: no warning
    assert fits.mask.sum() == 64
    with pytest.warns(TextTruncationWarning, match=f"{encoder.name}.*65 tokens truncated to 64"):
        cut = encoder.encode([words(encoder, 65)])
    assert cut.embeddings.shape[1] == 64 and cut.mask.all()


def check_shapes(encoder, dim: int) -> None:
    out = encoder.encode(CAPTIONS)
    counts = [encoder.count_tokens(t) for t in CAPTIONS]
    assert out.embeddings.shape == (3, max(counts), dim)
    assert out.embeddings.dtype == torch.float32 and out.mask.dtype == torch.bool
    assert out.mask.sum(1).tolist() == counts
    assert (out.embeddings[~out.mask] == 0).all()  # padding carries zeros
    # a caption's embeddings do not depend on the batch it is in (padding is masked)
    alone = encoder.encode([CAPTIONS[2]])
    assert torch.allclose(alone.embeddings[0], out.embeddings[2, : counts[2]], atol=1e-5)


# ---------------------------------------------------------------------------- hash


def test_hash_encoder_shape_mask_and_determinism():
    encoder = build("hash")
    check_shapes(encoder, 64)
    again = build("hash").encode(CAPTIONS)
    assert torch.equal(again.embeddings, encoder.encode(CAPTIONS).embeddings)
    other = build("hash", seed=1).encode(CAPTIONS)
    assert not torch.allclose(other.embeddings, again.embeddings)
    a, b = encoder.encode(["dog bites man", "man bites dog"]).embeddings
    assert not torch.allclose(a, b)  # word order matters
    assert build("hash", dim=16).encode(["x"]).embeddings.shape == (1, 2, 16)


def test_hash_encoder_truncates_at_65_tokens_with_a_warning():
    check_truncation(build("hash"))


def test_pad_to_layout_slots():
    out = build("hash").encode(["one two"]).pad_to(64)
    assert out.embeddings.shape == (1, 64, 64) and out.mask.sum() == 3
    with pytest.raises(ConfigError, match="length"):
        out.pad_to(10)


def test_bad_arguments():
    with pytest.raises(UnknownNameError, match="clip"):
        build("clip")
    with pytest.raises(ConfigError, match="max_tokens"):
        build("hash", max_tokens=65)
    with pytest.raises(ConfigError, match="texts"):
        build("hash").encode([])
    with pytest.raises(ConfigError, match="texts"):
        build("hash").encode([3])


def test_registry_factories(registry):
    assert {"minilm", "t5", "hash"} <= set(registry.text_encoders)
    spec = registry.text_encoder("hash")
    assert spec.factory().encode(["x"]).embeddings.shape[-1] == spec.dim


# ---------------------------------------------------------------------------- minilm


@pytest.fixture(scope="module")
def minilm():
    return build("minilm")


def test_minilm_is_offline_and_real(minilm):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert minilm.dim == 384
    assert sum(p.numel() for p in minilm.model.parameters()) == 22_713_216
    assert (minilm.path / "model.safetensors").is_file()
    check_shapes(minilm, 384)
    # a pretrained encoder puts related captions closer than unrelated ones
    pooled = [
        minilm.encode([t]).embeddings[0].mean(0)
        for t in ("a kitten playing", "a small cat plays", "stock market report")
    ]
    cos = torch.nn.functional.cosine_similarity
    assert cos(pooled[0], pooled[1], dim=0) > cos(pooled[0], pooled[2], dim=0)


def test_minilm_truncates_at_65_tokens_with_a_warning(minilm):
    check_truncation(minilm)


# ---------------------------------------------------------------------------- t5


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory, save_tiny_t5):
    """A tiny randomly initialised T5 encoder + tokenizer saved the way a user's T5-XL is."""
    vocab = ["<pad>", "</s>", "<unk>", *sorted(set(" ".join(CAPTIONS).split())), "cat"]
    return save_tiny_t5(tmp_path_factory.mktemp("t5"), list(dict.fromkeys(vocab)), num_layers=2)


def test_t5_from_a_local_folder(t5_dir):
    encoder = build("t5", path=t5_dir)
    assert encoder.dim == 32
    check_shapes(encoder, 32)
    assert not any(p.requires_grad for p in encoder.model.parameters())  # frozen
    check_truncation(encoder)


def test_t5_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"t5.path=.*missing.*local directory"):
        build("t5", path=tmp_path / "missing")
    with pytest.raises(ConfigError, match="t5.path=None"):
        build("t5")
    with pytest.raises(ConfigError, match="T5 encoder"):
        build("t5", path=tmp_path)  # a folder with no model in it


# ---------------------------------------------------------------------------- cache


def test_cache_reads_back_what_it_stored(tmp_path):
    encoder = build("hash", cache=tmp_path)
    assert isinstance(encoder, CachedTextEncoder)
    first = encoder.encode(CAPTIONS + [CAPTIONS[0]])
    assert (encoder.hits, encoder.misses) == (0, 3)
    stored = list(tmp_path.rglob("*.safetensors"))
    assert len(stored) == 3
    again = build("hash", cache=tmp_path)
    second = again.encode(CAPTIONS + [CAPTIONS[0]])
    assert (again.hits, again.misses) == (4, 0)
    assert torch.equal(first.embeddings, second.embeddings)
    assert torch.equal(first.mask, second.mask)
    # another configuration of the encoder is another cache folder
    build("hash", dim=32, cache=tmp_path).encode(CAPTIONS)
    assert len(list(tmp_path.rglob("*.safetensors"))) == 6
    assert len(list(tmp_path.glob("*/identity.txt"))) == 2


def test_cache_warns_again_on_a_truncated_hit_and_heals_damage(tmp_path):
    encoder = build("hash", cache=tmp_path)
    long = words(encoder.encoder, 65)
    with pytest.warns(TextTruncationWarning):
        encoder.encode([long])
    with pytest.warns(TextTruncationWarning):  # from the cache, still not silent
        hit = encoder.encode([long])
    assert encoder.hits == 1 and hit.embeddings.shape[1] == 64
    cache = EmbeddingCache(tmp_path, encoder.identity)
    cache.path("rain").parent.mkdir(parents=True, exist_ok=True)
    cache.path("rain").write_bytes(b"damaged")
    out = encoder.encode(["rain"])
    assert encoder.misses == 2 and out.mask.sum() == 2
    assert cache.get("rain") is not None  # rewritten


def test_an_encoder_folder_is_identified_by_content_not_file_times(tmp_path, monkeypatch):
    """A fresh install unpacks the packaged MiniLM with new file times: a bundle trained with it
    elsewhere must still accept it; other weights must not pass."""
    import shutil

    from videopoet.plugins.text import encoders

    monkeypatch.setattr(encoders, "FULL_HASH_LIMIT", 4 << 20)  # sample files above 4 MiB
    folder = tmp_path / "encoder"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    big = bytearray(os.urandom(6 << 20))
    (folder / "model.safetensors").write_bytes(big)
    stamp = encoders._files_stamp(folder)
    os.utime(folder / "model.safetensors", (1, 1))
    copy = shutil.copytree(folder, tmp_path / "elsewhere")
    assert encoders._files_stamp(folder) == stamp == encoders._files_stamp(copy)
    big[-10] ^= 0xFF  # within the tail sample of the large file
    (copy / "model.safetensors").write_bytes(big)
    (folder / "config.json").write_text('{"hidden_size": 1}')
    assert stamp != encoders._files_stamp(copy)
    assert stamp != encoders._files_stamp(folder)
