"""A folder of real media as clips of one format; bad files are skipped and reported.

``scan_folder`` reads every file's header and cuts as many clips of the format as fit, so a
corrupt file, a file without video, one too short for the format or (when sound is needed)
one without an audio track is listed in ``ScanReport.skipped`` with the reason, and the scan
goes on. ``MediaFolder`` then loads one clip per index.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from videopoet.core.declarations import FPS, Format
from videopoet.core.errors import ConfigError
from videopoet.data.media import Clip, MediaError, duration_frames, load_clip, probe

log = logging.getLogger(__name__)
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")


@dataclass
class ScanReport:
    """Clips found (file, start second) and files skipped (file, reason)."""

    clips: list[tuple[str, float]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: file -> whether it has an audio track, for every file that gave clips
    audio: dict[str, bool] = field(default_factory=dict)
    #: skipped file -> the problem code of its MediaError (``too_short``, ``corrupt`` ...)
    problems: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        files = len({path for path, _ in self.clips})
        text = f"{len(self.clips)} clips from {files} files, {len(self.skipped)} skipped"
        return text + "".join(f"\n  skipped {p}: {why}" for p, why in self.skipped)


def scan_folder(
    root: str | os.PathLike,
    format: Format,
    audio: bool = False,
    fps: float = FPS,
    suffixes: tuple[str, ...] = VIDEO_SUFFIXES,
    progress: bool = True,
) -> ScanReport:
    """Every ``format`` clip (non-overlapping) in the video files under ``root``."""
    from tqdm.auto import tqdm

    root = Path(root)
    if not root.is_dir():
        raise ConfigError("root", str(root), "an existing folder of media files")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    report = ScanReport()
    for path in tqdm(files, desc=f"scan {root.name}", disable=not progress):
        try:
            info = probe(path)
            if not info.has_video:
                raise MediaError(path, "no_video", "has no video stream")
            if audio and not info.has_audio:
                raise MediaError(path, "no_audio", "has no audio track, which this task needs")
            available = duration_frames(info.duration, fps)
            if available < format.frames:
                raise MediaError(
                    path,
                    "too_short",
                    f"lasts {info.duration:.2f} s ({available} frames at {fps:g} fps); "
                    f"{format} needs {format.frames}",
                )
        except MediaError as exc:
            report.skipped.append((str(path), exc.detail))
            report.problems[str(path)] = exc.problem
            log.warning("skipping %s", exc)
            continue
        report.audio[str(path)] = info.has_audio
        for index in range(available // format.frames):
            report.clips.append((str(path), index * format.frames / fps))
    return report


class MediaFolder:
    """Clips of one format from a folder; ``folder[i]`` decodes clip ``i``."""

    def __init__(
        self,
        root: str | os.PathLike,
        format: Format,
        audio: bool = False,
        fps: float = FPS,
        progress: bool = True,
    ) -> None:
        self.format, self.audio, self.fps = format, audio, fps
        self.report = scan_folder(root, format, audio, fps, progress=progress)

    def __len__(self) -> int:
        return len(self.report.clips)

    def __getitem__(self, index: int) -> Clip:
        path, start = self.report.clips[index]
        return load_clip(path, self.format, start, audio=self.audio or None, fps=self.fps)


# ---------------------------------------------------------------------------- captions, splits
#
# A folder of your own videos for ``videopoet tokenize`` (docs/training.md): a caption comes
# from a listing at the folder's top (``captions.jsonl`` lines ``{"file": ..., "caption": ...}``
# or ``captions.csv`` with a ``file,caption`` header, file names relative to the folder), else
# from a sidecar ``NAME.txt`` beside ``NAME.mp4``; whole videos go to train or eval by a hash of
# their relative path.

CAPTION_LISTINGS = ("captions.jsonl", "captions.csv")


@dataclass
class Captions:
    """Captions by video path relative to the folder (POSIX), and the listing they came from."""

    listing: str | None = None
    by_file: dict[str, str] = field(default_factory=dict)


def clean_caption(text: str | None) -> str | None:
    """Whitespace (line breaks included) collapsed to single spaces; empty → None."""
    if text is None:
        return None
    text = " ".join(str(text).split())
    return text or None


def relative_name(root: str | os.PathLike, path: str | os.PathLike) -> str:
    """``path`` relative to ``root`` with ``/`` separators (the key of captions and splits)."""
    path, root = Path(path), Path(root)
    if path.is_absolute():
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return path.as_posix()
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def find_listing(
    root: str | os.PathLike, listing: str | os.PathLike | None, field_name: str = "captions"
) -> Path | None:
    """The caption listing to read: ``listing`` as given (or inside ``root``); by default
    ``captions.jsonl`` or ``captions.csv`` at the top of ``root`` if one is there."""
    root = Path(root)
    if listing is None:
        found = [root / name for name in CAPTION_LISTINGS if (root / name).is_file()]
        if len(found) > 1:
            raise ConfigError(
                field_name,
                None,
                f"the name of one listing: {root} holds both {' and '.join(CAPTION_LISTINGS)}",
            )
        return found[0] if found else None
    for candidate in (Path(listing), root / listing):
        if candidate.is_file():
            if candidate.suffix.lower() not in (".jsonl", ".csv"):
                raise ConfigError(field_name, str(listing), "a .jsonl or .csv caption listing")
            return candidate
    raise ConfigError(
        field_name, str(listing), f"an existing .jsonl or .csv file (as given, or inside {root})"
    )


def read_captions(
    root: str | os.PathLike, listing: str | os.PathLike | None = None, field_name: str = "captions"
) -> Captions:
    """The listing's captions (see :func:`find_listing`), keyed by relative video path.

    ``.jsonl``: one JSON object a line with ``file`` and ``caption``; ``.csv``: a header row
    naming ``file`` and ``caption`` columns. A malformed line is a :class:`ConfigError` naming
    the file and line; a file listed twice keeps its last caption.
    """
    import csv
    import io
    import json

    path = find_listing(root, listing, field_name)
    out = Captions(None if path is None else str(path))
    if path is None:
        return out
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(field_name, str(path), f"a readable UTF-8 file ({exc})") from None
    if path.suffix.lower() == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    field_name, f"{path}:{number}", f"one JSON object a line ({exc.msg})"
                ) from None
            if not isinstance(row, dict) or not isinstance(row.get("file"), str):
                raise ConfigError(
                    field_name, f"{path}:{number}", 'an object like {"file": ..., "caption": ...}'
                )
            rows.append((number, row))
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if not reader.fieldnames or not {"file", "caption"} <= set(reader.fieldnames):
            raise ConfigError(
                field_name, str(path), f"a header row naming file,caption (got {reader.fieldnames})"
            )
        rows = [(number, row) for number, row in enumerate(reader, 2)]
    for number, row in rows:
        caption = row.get("caption")
        if caption is not None and not isinstance(caption, str):
            raise ConfigError(field_name, f"{path}:{number}", "a caption that is a string")
        name = relative_name(root, (row["file"] or "").strip())
        if not name or name == ".":
            raise ConfigError(field_name, f"{path}:{number}", "a file name")
        cleaned = clean_caption(caption)
        if cleaned is not None:
            out.by_file[name] = cleaned
    return out


def sidecar_caption(video: str | os.PathLike) -> str | None:
    """The caption in ``NAME.txt`` beside ``NAME.mp4``, if there is one."""
    path = Path(video).with_suffix(".txt")
    if not path.is_file():
        return None
    try:
        return clean_caption(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("ignoring caption file %s: %s", path, exc)
        return None


def hash_fraction(*parts: object) -> float:
    """A number in [0, 1) that depends only on ``parts`` (stable across runs and machines)."""
    import hashlib

    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()
    return int(digest[:13], 16) / 16**13


def split_videos(names: list[str], eval_fraction: float, seed: int = 0) -> dict[str, str]:
    """``"train"`` or ``"eval"`` for each video name: the ``eval_fraction`` of the names with the
    smallest ``hash_fraction(seed, name)`` go to eval (rounded, at least one and never all when
    there are two videos or more and the fraction is above 0).

    A video's split depends on its name and the seed, not on the order of the folder; adding
    videos moves an existing one only when the rounding moves the boundary.
    """
    ranked = sorted(set(names), key=lambda n: (hash_fraction(seed, n), n))
    count = round(eval_fraction * len(ranked))
    if eval_fraction > 0 and len(ranked) >= 2:
        count = min(max(count, 1), len(ranked) - 1)
    return {name: ("eval" if i < count else "train") for i, name in enumerate(ranked)}


def pick_windows(starts: list[float], limit: int | None) -> list[float]:
    """At most ``limit`` of a video's clip starts, spread evenly from its first to its last."""
    if limit is None or len(starts) <= limit:
        return list(starts)
    if limit == 1:
        return [starts[0]]
    step = (len(starts) - 1) / (limit - 1)
    return [starts[round(i * step)] for i in range(limit)]
