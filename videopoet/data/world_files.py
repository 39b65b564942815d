"""A world sample as files: what ``videopoet world`` writes.

``clip.mp4`` (H.264 + AAC, the sound muxed), ``frame0.png``, ``audio.wav``, ``caption.txt``,
``structure.mp4`` (the ground-truth structure clip of :func:`world.structure_clip
<videopoet.data.world.structure_clip>`: flow x, flow y and depth as R, G, B) and
``sample.json`` (:func:`sample_record`). Every file is written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from videopoet.data import media, world

FILES = ("clip.mp4", "frame0.png", "audio.wav", "caption.txt", "structure.mp4", "sample.json")


def _rounded(values, digits: int = 4) -> list:
    return [round(float(v), digits) for v in values]


def sample_record(item: world.WorldSample, seed: int) -> dict:
    """The sample's description and ground truth as plain JSON values.

    ``motion`` is ``None`` for a 1-frame sample (an image: its caption names no motion).
    """
    _, frames, height, width = item.video.shape
    return {
        "seed": seed,
        "index": item.index,
        "format": f"{frames}x{height}x{width}",
        "frames": frames,
        "height": height,
        "width": width,
        "fps": item.fps,
        "sample_rate": item.sample_rate,
        "caption": item.caption,
        "color": item.color,
        "shape": item.shape,
        "motion": item.motion if frames > 1 else None,
        "background": item.background,
        "centers": [_rounded(c) for c in item.centers.tolist()],
        "sizes": _rounded(item.sizes.tolist()),
        "pitch_hz": _rounded(item.pitch_hz.tolist(), 2),
        "loudness": _rounded(item.loudness.tolist()),
        "bounce_times": _rounded(item.bounce_times),
        "distractors": [
            {
                "color": d["color"],
                "shape": d["shape"],
                "center": _rounded(d["center"]),
                "size": round(float(d["size"]), 4),
            }
            for d in item.distractors
        ],
        "files": list(FILES),
    }


def write_sample(item: world.WorldSample, out: str | os.PathLike, seed: int) -> dict:
    """Write the sample's files into ``out`` (created if needed); returns its record."""
    out = Path(out)
    frames = media.tensor_to_frames(item.video)
    media.write_mp4(out / "clip.mp4", frames, item.fps, item.audio, item.sample_rate)
    media.write_png(out / "frame0.png", frames[0])
    media.write_wav(out / "audio.wav", item.audio, item.sample_rate)
    structure = media.tensor_to_frames(world.structure_clip(item))
    media.write_mp4(out / "structure.mp4", structure, item.fps)
    record = sample_record(item, seed)
    _write_text(out / "caption.txt", item.caption + "\n")
    _write_text(out / "sample.json", json.dumps(record, indent=2) + "\n")
    return record


def _write_text(path: Path, text: str) -> None:
    with media._atomic_target(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
