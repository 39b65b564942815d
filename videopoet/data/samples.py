"""Where the real sample media fetched by ``scripts/fetch-sample-media.sh`` live.

The script puts them in ``$VIDEOPOET_SAMPLES`` (default ``~/.cache/videopoet/samples``),
outside the repository: ``video/`` (two clips from Debian's python3-imageio), ``speech/``
(recorded prompts with ``transcripts.txt``, from asterisk-core-sounds-en) and ``music/``
(CC0 loops, instruments and drums, from sonic-pi-samples).

Tests call :func:`require` : under CI (``CI`` set) missing media fail the test, elsewhere the
test is skipped with the reason, so a fresh checkout still runs the rest.
"""

from __future__ import annotations

import os
from pathlib import Path

from videopoet.core.errors import VideoPoetError

FETCH = "bash scripts/fetch-sample-media.sh"
COCKATOO = "video/cockatoo.mp4"  #: 1280x720, 20 fps, 14 s, a silent audio track
REALSHORT = "video/realshort.mp4"  #: 320x240, 30 fps, 1.2 s, real sound (48 kHz AAC)


class SamplesMissing(VideoPoetError, FileNotFoundError):
    """The sample media have not been fetched."""


def samples_dir() -> Path:
    return Path(os.environ.get("VIDEOPOET_SAMPLES", Path.home() / ".cache/videopoet/samples"))


def sample(relative: str) -> Path:
    """The path of one sample file; :class:`SamplesMissing` (with the fix) if absent."""
    path = samples_dir() / relative
    if not path.is_file():
        raise SamplesMissing(f"sample media {path} not found: run `{FETCH}` first")
    return path


def speech_clips() -> list[tuple[Path, str]]:
    """(wav path, what is said) for every speech clip with a spoken transcript."""
    folder = samples_dir() / "speech"
    listing = folder / "transcripts.txt"
    if not listing.is_file():
        raise SamplesMissing(f"{listing} not found: run `{FETCH}` first")
    out = []
    for line in listing.read_text(encoding="utf-8", errors="replace").splitlines():
        name, sep, text = line.partition(":")
        text = text.strip()
        # "[beep tone]"-style entries describe sounds, not speech
        if not sep or line.startswith(";") or not text or text.startswith("["):
            continue
        path = folder / f"{name.strip()}.wav"
        if path.is_file():
            out.append((path, text))
    return out


def music_clips() -> list[Path]:
    """Every music/drum sample (FLAC)."""
    folder = samples_dir() / "music"
    found = sorted(folder.glob("*.flac"))
    if not found:
        raise SamplesMissing(f"no music samples in {folder}: run `{FETCH}` first")
    return found


def require(*relative: str) -> Path:
    """For tests: the samples folder if the files are there; otherwise fail under CI and
    skip elsewhere (pytest is imported only here)."""
    import pytest

    try:
        for name in relative or ("speech/transcripts.txt",):
            sample(name)
    except SamplesMissing as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc} (CI must fetch the sample media)")
        pytest.skip(str(exc))
    return samples_dir()
