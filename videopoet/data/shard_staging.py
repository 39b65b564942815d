"""The committed progress of an unfinished ``videopoet tokenize``, so a re-run goes on.

```
OUT.partial/                    beside the shard folder OUT, removed once OUT is written
  tokenize.json                 what the rows depend on: the config (less the fields that may
                                change between attempts), the engine's identity (as meta.json
                                records it), the tasks, the format, the folder's clip plan
  chunk_00000.safetensors       the rows of a chunk, in the order they were added:
                                ``{i}.tokens`` int32, ``{i}.text`` float16, ``{i}.mask`` bool
  chunk_00000.json              their groups, the batch the next chunk starts at and the
                                source's counters so far; written last: a chunk without it is
                                not committed
```

A re-run with the same record puts the committed rows back into the :class:`ShardWriter` and
starts at the first batch no chunk holds; batches are cut the same way on every attempt, so
the shards are byte for byte those of an uninterrupted run. Another record is refused, naming
what differs (or, for a recipe stage, thrown away: the recipe says what the result is).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from videopoet.core.errors import ConfigError
from videopoet.core.serialization import load_json, load_tensors, save_json, save_tensors
from videopoet.data.shards import Group, ShardWriter

RECORD_NAME = "tokenize.json"
STAGING_VERSION = 1


def staging_folder(out: str | os.PathLike) -> Path:
    """Where the chunks of a tokenize writing ``out`` are kept: ``OUT.partial`` beside it."""
    out = Path(out)
    return out.parent / f"{out.name}.partial"


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out |= _flat(item, f"{prefix}.{key}" if prefix else str(key))
        return out
    return {prefix: value}


def differences(saved: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(dotted key, saved value, value now)`` for each leaf that differs."""
    a, b = _flat(saved), _flat(now)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


class ShardStaging:
    """Commits a :class:`ShardWriter`'s rows in chunks and puts them back on a re-run."""

    def __init__(self, out: str | os.PathLike, record: dict[str, Any], commit_every: int):
        self.folder = staging_folder(out)
        # as it reads back from tokenize.json (lists, not tuples), so the two compare
        self.record = json.loads(json.dumps({"version": STAGING_VERSION, **record}))
        self.commit_every = commit_every
        #: the first batch still to do, the source's counters at that point, rows put back
        self.next_batch, self.stats, self.resumed = 0, {}, 0
        self.restarted = False  # an earlier attempt's chunks were thrown away
        self._chunks = 0  # chunks committed
        self._committed = 0  # rows of the writer's log committed

    def open(self, writer: ShardWriter, restart: bool = False, data: str | None = None) -> bool:
        """Put the committed rows into ``writer``; whether an earlier attempt's chunks were
        thrown away (``restart``, for a recipe stage) because its record differs. Without
        ``restart`` a different record is a :class:`ConfigError` naming what differs.
        ``data`` (a digest of what the batches hold, e.g. a folder's clip list) joins the
        record."""
        if data is not None:
            self.record["data"] = data
        restarted = False
        saved_path = self.folder / RECORD_NAME
        if self.folder.is_dir():
            saved = load_json(saved_path) if saved_path.is_file() else None
            if saved is not None and saved != self.record:
                if not restart:
                    raise self._mismatch(saved)
                restarted = True
            if saved != self.record:  # killed before its record was written, or restarted
                shutil.rmtree(self.folder)
        if self.folder.is_dir():
            self._replay(writer)
        else:
            self.folder.mkdir(parents=True)
            save_json(saved_path, self.record)
        self._committed = len(writer.log)
        self.restarted = restarted
        return restarted

    def _mismatch(self, saved: dict[str, Any]) -> ConfigError:
        diff = differences(saved, self.record)
        key, before, now = diff[0]
        key = key.removeprefix("config.")
        shown = "; ".join(
            f"{k.removeprefix('config.')}: {a!r} then, {b!r} now" for k, a, b in diff[:6]
        )
        more = f" and {len(diff) - 6} more" if len(diff) > 6 else ""
        return ConfigError(
            key,
            now,
            f"{before!r}, as in the unfinished tokenize whose chunks are in {self.folder} "
            f"(it differs in {shown}{more}); to start over, delete {self.folder}, or write to "
            "another out",
        )

    def _paths(self, number: int) -> tuple[Path, Path]:
        stem = self.folder / f"chunk_{number:05d}"
        return stem.with_suffix(".safetensors"), stem.with_suffix(".json")

    def _replay(self, writer: ShardWriter) -> None:
        number = 0
        while True:
            tensors_path, record_path = self._paths(number)
            if not record_path.is_file():
                break
            try:
                record, tensors = load_json(record_path), load_tensors(tensors_path)
            except ConfigError:  # torn by a crash: this chunk is done again
                break
            groups = {folder: Group(**fields) for folder, fields in record["groups"].items()}
            for i, folder in enumerate(record["rows"]):
                row = (tensors[f"{i}.tokens"], tensors.get(f"{i}.text"), tensors.get(f"{i}.mask"))
                writer.append(groups[folder], row)
            self.next_batch, self.stats = record["stop"], record["stats"]
            self.resumed += len(record["rows"])
            number += 1
        self._chunks = number
        for path in self.folder.glob("chunk_*"):  # what a later chunk left: done again
            if int(path.stem.removeprefix("chunk_")) >= number:
                path.unlink()

    def batch_done(self, stop: int, writer: ShardWriter, stats: dict[str, Any]) -> None:
        """Batches up to ``stop`` (exclusive) are in ``writer``: commit its new rows once
        there are ``commit_every`` of them, with ``stats`` (the counters so far)."""
        if len(writer.log) - self._committed >= self.commit_every:
            self.commit(stop, writer, stats)

    def commit(self, stop: int, writer: ShardWriter, stats: dict[str, Any]) -> None:
        rows = writer.log[self._committed :]
        tensors, folders, groups = {}, [], {}
        for i, (ident, index) in enumerate(rows):
            group = writer.groups[ident]
            tokens, text, mask = writer.rows[ident][index]
            tensors[f"{i}.tokens"] = tokens
            if text is not None:
                tensors[f"{i}.text"], tensors[f"{i}.mask"] = text, mask
            folders.append(group.folder)
            groups[group.folder] = asdict(group) | {"count": 0}
        tensors_path, record_path = self._paths(self._chunks)
        save_tensors(tensors_path, tensors)
        record = {"stop": stop, "stats": stats, "groups": groups, "rows": folders}
        save_json(record_path, record)  # last: the chunk counts from here on
        self._chunks += 1
        self._committed = len(writer.log)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
