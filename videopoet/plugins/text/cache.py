"""On-disk cache of text embeddings, keyed by (encoder identity, text).

Training sees the same captions epoch after epoch; a frozen encoder gives the same
embeddings each time, so they are computed once and read back. One safetensors file per
caption (its real tokens only, (L, dim)), written atomically, under

    DIR/<sha256(identity)[:16]>/<key[:2]>/<key>.safetensors    key = sha256(identity, text)

with ``identity.txt`` beside them saying which encoder (name, weights stamp, max tokens)
the folder belongs to. The caption's token count is kept in the file's metadata, so a
caption that was truncated when it was encoded warns again when it is read from the cache.
A damaged file is treated as a miss and rewritten.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch

from videopoet.core.serialization import atomic_write, save_tensors
from videopoet.plugins.text.encoders import TextEmbeddings, TextEncoder, _warn_truncated


def default_cache_dir() -> Path:
    base = os.environ.get("VIDEOPOET_CACHE", Path.home() / ".cache" / "videopoet")
    return Path(base) / "text-embeddings"


class EmbeddingCache:
    """Embeddings of one encoder identity, one file per text."""

    def __init__(self, directory: str | os.PathLike | None, identity: str) -> None:
        self.identity = identity
        folder = hashlib.sha256(identity.encode()).hexdigest()[:16]
        self.root = Path(directory or default_cache_dir()) / folder
        marker = self.root / "identity.txt"
        if not marker.is_file():
            atomic_write(marker, identity + "\n")

    def path(self, text: str) -> Path:
        key = hashlib.sha256(f"{self.identity}\0{text}".encode()).hexdigest()
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, text: str) -> tuple[torch.Tensor, int] | None:
        """(embeddings (L, dim), original token count), or None on a miss."""
        from safetensors import safe_open

        path = self.path(text)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                if meta.get("text") != text:  # a hash collision or a foreign file
                    return None
                return handle.get_tensor("embeddings"), int(meta.get("tokens", 0))
        except Exception:  # a damaged file: recompute it
            return None

    def put(self, text: str, embeddings: torch.Tensor, tokens: int) -> None:
        save_tensors(
            self.path(text),
            {"embeddings": embeddings.float()},
            {"text": text, "tokens": tokens, "identity": self.identity},
        )


class CachedTextEncoder(TextEncoder):
    """Wraps an encoder: hits come from disk, misses are encoded together and stored."""

    def __init__(self, encoder: TextEncoder, directory: str | os.PathLike | None = None) -> None:
        self.encoder = encoder
        self.name, self.dim, self.max_tokens = encoder.name, encoder.dim, encoder.max_tokens
        self.cache = EmbeddingCache(directory, encoder.identity)
        self.hits = self.misses = 0

    @property
    def identity(self) -> str:
        return self.encoder.identity

    def count_tokens(self, text: str) -> int:
        return self.encoder.count_tokens(text)

    def _encode(self, texts: list[str]) -> TextEmbeddings:
        found: dict[str, torch.Tensor] = {}
        for text in dict.fromkeys(texts):
            entry = self.cache.get(text)
            if entry is None:
                continue
            found[text], tokens = entry
            if tokens > self.max_tokens:
                _warn_truncated(self.name, text, tokens, self.max_tokens)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        self.hits += len(texts) - sum(texts.count(t) for t in missing)
        self.misses += len(missing)
        if missing:
            with warnings.catch_warnings():
                warnings.simplefilter("always")  # let each truncation through, once per text
                fresh = self.encoder.encode(missing)
            for i, text in enumerate(missing):
                rows = fresh.embeddings[i, fresh.mask[i]]
                self.cache.put(text, rows, self.encoder.count_tokens(text))
                found[text] = rows
        length = max(found[t].shape[0] for t in texts)
        emb = torch.zeros(len(texts), length, self.dim)
        mask = torch.zeros(len(texts), length, dtype=torch.bool)
        for i, text in enumerate(texts):
            rows = found[text]
            emb[i, : rows.shape[0]] = rows
            mask[i, : rows.shape[0]] = True
        return TextEmbeddings(emb, mask)
