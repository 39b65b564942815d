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
            log.warning("skipping %s", exc)
            continue
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
