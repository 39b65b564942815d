"""Token shards: training examples tokenized once, read memory-mapped by the LM trainer.

```
SHARDS/
  meta.json                     identities: tokenizers (name + weights hash), text encoder,
                                vocabulary hash, formats; the groups below; and ``source``,
                                the data tokenized (the world and its settings, or a folder
                                of videos: root, captions, split, what was skipped)
  train/<task>/<group>/         one group = one task at one layout (same length, same spans)
      tokens.npy                (n, L) int32 global ids, text slots hold <pad>
      text.npy, text_mask.npy   (n, K, dim) float16 and (n, K) bool, when the task has text
  eval/...                      the same for held-out world seeds or held-out videos
```

Examples of one group share their layout, so a batch drawn from one group has no padding
(alternating gradient descent, paper 4.2). A shard written for other tokenizers, another text
encoder or another vocabulary is refused by name: its ids would mean something else. An
unfinished ``videopoet tokenize`` keeps its progress beside the folder, in ``SHARDS.partial``
(:mod:`videopoet.data.shard_staging`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videopoet.core.commit_fill import LEGACY_FILL
from videopoet.core.errors import ConfigError, VideoPoetError
from videopoet.core.serialization import load_json, save_json, write_atomic_dir

META_NAME = "meta.json"
SHARD_VERSION = 1


class StaleShardsError(VideoPoetError, ValueError):
    """Shards tokenized with other tokenizers, text encoder or vocabulary than the model's."""


@dataclass
class Group:
    """Examples of one task at one layout: what a batch is drawn from."""

    split: str
    task: str
    key: str  # folder name: a short hash of the layout's spans
    count: int
    length: int
    prefix_length: int
    text_start: int | None
    text_slots: int
    #: condition spans by input name (text, visual input names, audio) -> [start, stop)
    conditions: dict[str, list[int]] = field(default_factory=dict)
    spans: list[list[Any]] = field(default_factory=list)  # [name, start, length, target]
    format: str = ""
    #: the layout's grid positions (Layout.grid), flattened: t, row, col of each position;
    #: empty in shards written before grid positions
    grid: list[int] = field(default_factory=list)

    def grid_tensor(self) -> torch.Tensor | None:
        """(length, 3) long tensor of :attr:`grid`, None when the shards hold none."""
        if not self.grid:
            return None
        return torch.tensor(self.grid, dtype=torch.long).reshape(-1, 3)

    @property
    def folder(self) -> str:
        return f"{self.split}/{self.task}/{self.key}"


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (the weights a shard's ids came from)."""
    from videopoet.core.serialization import file_sha256

    return file_sha256(path)[:16]


def engine_identity(engine: Any) -> dict[str, Any]:
    """What a shard's ids and embeddings depend on, for an Engine."""

    def tokenizer(network: Any, spec: Any) -> dict[str, Any] | None:
        if network is None:
            return None
        digest = hashlib.sha256()
        for name, tensor in sorted(network.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return {"name": spec.name, "weights": digest.hexdigest()[:16]}

    table = json.dumps(engine.vocab.to_dict(), sort_keys=True).encode()
    identity = {
        "visual_tokenizer": tokenizer(engine.visual, engine.visual_spec),
        "audio_tokenizer": tokenizer(engine.audio, engine.audio_spec),
        "text_encoder": engine.text_record.identity if engine.text_record else None,
        "vocabulary": hashlib.sha256(table).hexdigest()[:16],
    }
    fill = getattr(engine, "commit_fill", LEGACY_FILL)
    if fill != LEGACY_FILL:  # shards written before the fill was recorded were grey ones
        identity["commit_fill"] = fill
    return identity


def _layout_key(layout: Any) -> tuple[str, list[list[Any]]]:
    spans = [[s.name, s.start, s.length, s.target] for s in layout.spans]
    key = hashlib.sha256(json.dumps([layout.task.name, spans]).encode()).hexdigest()[:10]
    return key, spans


def _conditions(layout: Any) -> dict[str, list[int]]:
    out = {}
    if layout.text_span is not None:
        out["text"] = [layout.text_span.start, layout.text_span.stop]
    for entry in layout.task.prefix.visual_inputs:
        if layout.has(entry.span):
            span = layout.span(entry.span)
            out[entry.name] = [span.start, span.stop]
    if layout.has("audio_in"):
        span = layout.span("audio_in")
        out["audio"] = [span.start, span.stop]
    return out


class ShardWriter:
    """Collects encoded examples (``Engine.encode_example``) and writes them atomically.

    ``log`` lists the rows in the order they were added (``(group ident, row index)``), so
    :mod:`videopoet.data.shard_staging` can commit them in chunks and put them back in order.
    """

    def __init__(self, directory: str | os.PathLike, identity: dict[str, Any], text_dim: int):
        self.directory = Path(directory)
        self.identity, self.text_dim = identity, text_dim
        self.rows: dict[tuple[str, str, str], list[Any]] = {}
        self.groups: dict[tuple[str, str, str], Group] = {}
        self.log: list[tuple[tuple[str, str, str], int]] = []

    def add(self, split: str, encoded: Any) -> None:
        layout = encoded.layout
        key, spans = _layout_key(layout)
        slots = layout.text_span.length if layout.text_span is not None else 0
        group = Group(
            split,
            encoded.task,
            key,
            0,
            layout.total_length,
            layout.prefix_length,
            layout.text_span.start if layout.text_span is not None else None,
            slots,
            _conditions(layout),
            spans,
            str(layout.format),
            [i for place in layout.grid for i in place],
        )
        text = mask = None
        if slots:
            text = torch.zeros(slots, self.text_dim)
            mask = torch.zeros(slots, dtype=torch.bool)
            k = min(slots, encoded.text.shape[0])
            text[:k] = encoded.text[:k]
            mask[:k] = encoded.text_mask[:k]
            text = text.to(torch.float16)  # as written: half the memory, the same bytes
        self.append(group, (encoded.tokens.to(torch.int32), text, mask))

    def append(self, group: Group, row: tuple[torch.Tensor, Any, Any]) -> None:
        """Add one row (int32 tokens, float16 text or None, bool text mask or None) to
        ``group``'s rows (``group.count`` is ignored: the writer counts)."""
        ident = (group.split, group.task, group.key)
        if ident not in self.groups:
            self.groups[ident] = replace(group, count=0)
            self.rows[ident] = []
        self.log.append((ident, len(self.rows[ident])))
        self.rows[ident].append(row)
        self.groups[ident].count += 1

    def write(self, extra: dict[str, Any] | None = None) -> Path:
        """Write every group into a folder beside the target and swap it in whole."""

        def fill(tmp: Path) -> None:
            for ident, rows in self.rows.items():
                group = self.groups[ident]
                folder = tmp / group.folder
                folder.mkdir(parents=True)
                np.save(folder / "tokens.npy", torch.stack([r[0] for r in rows]).numpy())
                if group.text_slots:
                    text = torch.stack([r[1] for r in rows]).to(torch.float16).numpy()
                    np.save(folder / "text.npy", text)
                    np.save(folder / "text_mask.npy", torch.stack([r[2] for r in rows]).numpy())
            meta = {
                "version": SHARD_VERSION,
                "identity": self.identity,
                "text_dim": self.text_dim,
                "groups": [asdict(g) for g in self.groups.values()],
                **(extra or {}),
            }
            save_json(tmp / META_NAME, meta)

        return write_atomic_dir(self.directory, fill)


class TokenShards:
    """Read side: groups by split and task, their arrays memory-mapped."""

    def __init__(self, directory: str | os.PathLike, identity: dict[str, Any] | None = None):
        self.directory = Path(directory)
        path = self.directory / META_NAME
        if not path.is_file():
            raise ConfigError(
                "data.shards", str(directory), "a folder written by videopoet tokenize"
            )
        self.meta = load_json(path)
        if self.meta.get("version") != SHARD_VERSION:
            raise StaleShardsError(f"{path}: shard version {self.meta.get('version')}")
        if identity is not None:
            self.check(identity)
        self.groups = [Group(**g) for g in self.meta["groups"]]
        self._arrays: dict[str, dict[str, np.ndarray]] = {}

    def check(self, identity: dict[str, Any]) -> None:
        saved = self.meta.get("identity", {})
        wrong = [k for k in sorted(set(saved) | set(identity)) if saved.get(k) != identity.get(k)]
        if wrong:
            shown = "; ".join(
                f"{k}: shards {saved.get(k)} vs model {identity.get(k)}" for k in wrong
            )
            raise StaleShardsError(
                f"the shards in {self.directory} were tokenized for another model ({shown}); "
                "run videopoet tokenize again for this bundle"
            )

    def of(self, split: str, task: str | None = None) -> list[Group]:
        return [g for g in self.groups if g.split == split and (task is None or g.task == task)]

    def tasks(self, split: str = "train") -> list[str]:
        return sorted({g.task for g in self.of(split)})

    def arrays(self, group: Group) -> dict[str, np.ndarray]:
        if group.folder not in self._arrays:
            folder = self.directory / group.folder
            out = {"tokens": np.load(folder / "tokens.npy", mmap_mode="r", allow_pickle=False)}
            if group.text_slots:
                for name in ("text", "text_mask"):
                    out[name] = np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            self._arrays[group.folder] = out
        return self._arrays[group.folder]
