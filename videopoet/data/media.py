"""Media files in and out, through PyAV (torchaudio's own file I/O needs torchcodec).

Reading: a video file's frames are resampled to 8 fps by timestamp (each output instant takes
the source frame shown at that instant), resized so the picture covers the format and
centre-cropped to it; its audio track is downmixed to mono and resampled to 16 kHz with
torchaudio. A clip of F frames at 8 fps spans F / 8 s, and its audio the same span
(17 frames → 2.125 s → 34,000 samples).

Tensors: frames are ``uint8`` (T, H, W, 3) as decoded; :func:`frames_to_tensor` gives the
models' float (3, T, H, W) in [-1, 1] and :func:`tensor_to_frames` goes back. Audio is float
(channels, samples) in [-1, 1].

Writing: MP4 (H.264 + AAC, video and audio muxed), WAV (16-bit PCM), PNG and GIF; every file
is written to a temporary name beside the target and renamed, so a target is never torn.

Every failure on a file raises :class:`MediaError` naming the file and what is wrong with it;
a bad argument (a negative ``start``, ``size=(0, 0)``, ``fps=nan``, ``sample_rate=0`` ...) is a
:class:`ConfigError` naming the argument, checked before the file is opened.

Small pictures: with ``size=`` a picture is scaled to cover the size, up as well as down, but a
source narrower or shorter than :data:`MIN_SOURCE_SIDE` pixels (the visual tokenizer's 8-pixel
patch) is a :class:`MediaError` (``too_small``) instead of a blown-up blur, unless the caller
passes a smaller ``min_side``. Without ``size=`` frames come at the file's own size.
"""

from __future__ import annotations

import math
import numbers
import os
import tempfile
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from videopoet.core.declarations import FPS, Format
from videopoet.core.errors import ConfigError, VideoPoetError
from videopoet.core.serialization import umask_mode

SAMPLE_RATE = 16_000  #: the audio tokenizer's rate (paper 3.1)
#: smallest source side (pixels) read with ``size=``: the visual tokenizer's patch
MIN_SOURCE_SIDE = 8
Problem = Literal["missing", "corrupt", "no_video", "no_audio", "too_short", "too_small"]


class MediaError(VideoPoetError, ValueError):
    """A media file that cannot serve: ``problem`` says why, the message names the file."""

    def __init__(self, path: str | os.PathLike, problem: Problem, detail: str) -> None:
        self.path, self.problem, self.detail = str(path), problem, detail
        super().__init__(f"{path}: {detail}")


@dataclass(frozen=True)
class MediaInfo:
    """What a file holds, read from its header (no decoding)."""

    path: str
    duration: float  # seconds (longest stream)
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    video_frames: int | None = None
    sample_rate: int | None = None
    audio_channels: int | None = None

    @property
    def has_video(self) -> bool:
        return self.width is not None

    @property
    def has_audio(self) -> bool:
        return self.sample_rate is not None


@dataclass
class Clip:
    """A cut of a file at one format: frames (T, H, W, 3) uint8 at ``fps``, audio (1, S)."""

    path: str
    start: float  # seconds into the file
    frames: torch.Tensor | None
    fps: float
    audio: torch.Tensor | None
    sample_rate: int

    @property
    def seconds(self) -> float:
        if self.frames is not None:
            return self.frames.shape[0] / self.fps
        return self.audio.shape[-1] / self.sample_rate  # type: ignore[union-attr]


# ---------------------------------------------------------------------------- arguments


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_start(start: float) -> float:
    if not (_is_real(start) and math.isfinite(start) and start >= 0):
        raise ConfigError("start", start, "a finite time in seconds >= 0 from the file's start")
    return float(start)


def _check_fps(fps: float) -> float:
    if not (_is_real(fps) and math.isfinite(fps) and fps > 0):
        raise ConfigError("fps", fps, "a positive, finite frame rate")
    return float(fps)


def _check_sample_rate(sample_rate: int) -> int:
    if not (_is_real(sample_rate) and math.isfinite(sample_rate) and sample_rate >= 1):
        raise ConfigError("sample_rate", sample_rate, "a positive whole number of Hz (16000)")
    if sample_rate != int(sample_rate):
        raise ConfigError("sample_rate", sample_rate, "a whole number of Hz (16000)")
    return int(sample_rate)


def _check_count(field: str, value: int | None) -> int | None:
    if value is not None and not (
        isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1
    ):
        raise ConfigError(field, value, "a positive whole number (or None: to the end)")
    return value


def _check_size(size: tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    expected = "(height, width): two positive whole numbers of pixels, or None"
    try:
        height, width = size
    except (TypeError, ValueError):
        raise ConfigError("size", size, expected) from None
    for value in (height, width):
        if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1):
            raise ConfigError("size", size, expected)
    return int(height), int(width)


def _check_source_size(path: str | os.PathLike, frame, size: tuple[int, int], min_side: int):
    """A picture smaller than ``min_side`` is refused rather than blown up to ``size``."""
    if min(frame.width, frame.height) < min_side:
        raise MediaError(
            path,
            "too_small",
            f"is {frame.width}x{frame.height} pixels (width x height), smaller than "
            f"{min_side} px on a side; scaling it up to {size[1]}x{size[0]} would only blur "
            f"it (pass min_side=1 to accept it)",
        )


# ---------------------------------------------------------------------------- opening


@contextmanager
def _open(path: str | os.PathLike) -> Iterator[object]:
    import av

    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "missing", "no such file")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(path, "corrupt", f"not a readable media file ({exc})") from None
    try:
        yield container
    finally:
        container.close()


def probe(path: str | os.PathLike) -> MediaInfo:
    """Streams and duration of a file, from its header."""
    with _open(path) as container:
        info: dict = {"path": str(path)}
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        durations = [container.duration / 1e6] if container.duration else []
        if video is not None and video.codec_context.width:
            rate = video.average_rate or video.guessed_rate
            info |= {
                "width": video.codec_context.width,
                "height": video.codec_context.height,
                "fps": float(rate) if rate else None,
                "video_frames": video.frames or None,
            }
            if video.duration and video.time_base:
                durations.append(float(video.duration * video.time_base))
        if audio is not None:
            info |= {"sample_rate": audio.rate, "audio_channels": audio.channels}
            if audio.duration and audio.time_base:
                durations.append(float(audio.duration * audio.time_base))
        return MediaInfo(duration=max(durations, default=0.0), **info)


# ---------------------------------------------------------------------------- video in


def read_frames(
    path: str | os.PathLike,
    fps: float = FPS,
    size: tuple[int, int] | None = None,
    start: float = 0.0,
    frames: int | None = None,
    min_side: int = MIN_SOURCE_SIDE,
) -> torch.Tensor:
    """Frames (T, H, W, 3) uint8 sampled at ``fps`` from ``start`` seconds.

    ``size=(height, width)`` resizes (area filter) so the picture covers the size and crops
    the centre, scaling up as well as down; a source picture narrower or shorter than
    ``min_side`` pixels (default 8, the tokenizer's patch) is then a :class:`MediaError`
    (``too_small``), never a silently blown-up blur: pass ``min_side=1`` to accept any. Without
    ``size`` the frames keep the file's size. ``frames`` stops after that many (default: to the
    end of the video).

    Bad arguments (``fps`` not positive and finite, a negative or non-finite ``start``,
    ``frames`` < 1, a ``size`` side < 1) are a :class:`ConfigError` naming the argument; a
    ``start`` at or past the end of the video is a :class:`MediaError` (``too_short``).
    """
    import av

    fps = _check_fps(fps)
    size = _check_size(size)
    start = _check_start(start)
    frames = _check_count("frames", frames)
    if _check_count("min_side", min_side) is None:
        raise ConfigError("min_side", min_side, "a positive whole number of pixels (8)")
    out: list[np.ndarray] = []
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(path, "no_video", "has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if start > 0 and stream.time_base:  # jump to the key frame before ``start``
            container.seek(int(start / stream.time_base), stream=stream, backward=True)
        step = 1.0 / fps
        wanted = start  # the instant of the next output frame
        previous = None
        try:
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else 0.0
                # A frame is on screen from its time until the next frame's time.
                while previous is not None and t > wanted + 1e-6:
                    out.append(_fit(previous, size))
                    wanted = start + len(out) * step
                    if frames is not None and len(out) >= frames:
                        break
                if frames is not None and len(out) >= frames:
                    break
                if previous is None and size is not None:
                    _check_source_size(path, frame, size, min_side)
                previous = frame
            else:
                end = _stream_end(stream, previous)
                while previous is not None and wanted < end - 1e-6:
                    out.append(_fit(previous, size))
                    wanted = start + len(out) * step
                    if frames is not None and len(out) >= frames:
                        break
        except av.error.FFmpegError as exc:
            raise MediaError(path, "corrupt", f"cannot decode its video ({exc})") from None
        if not out and start > 0:
            end = _stream_end(stream, previous) if previous is not None else None
            if end is None and container.duration:
                end = container.duration / 1e6
            if end is not None and start >= end - 1e-6:
                raise MediaError(
                    path, "too_short", f"has {end:g} s of video; start={start:g} s is past its end"
                )
    if not out:
        raise MediaError(path, "no_video", "has no decodable video frames")
    return torch.from_numpy(np.stack(out))


def _stream_end(stream, last) -> float:
    """End of the last frame: its time plus one frame period."""
    if last is None:
        return 0.0
    rate = stream.average_rate or stream.guessed_rate
    period = 1.0 / float(rate) if rate else 0.0
    return (last.time or 0.0) + period


def _fit(frame, size: tuple[int, int] | None) -> np.ndarray:
    """Resize to cover ``size`` (keeping the aspect) and crop the centre, as RGB uint8."""
    if size is None:
        return frame.to_ndarray(format="rgb24")
    height, width = size
    scale = max(height / frame.height, width / frame.width)
    new_h = max(height, round(frame.height * scale))
    new_w = max(width, round(frame.width * scale))
    image = frame.reformat(width=new_w, height=new_h, format="rgb24", interpolation="AREA")
    array = image.to_ndarray()
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return np.ascontiguousarray(array[top : top + height, left : left + width])


# ---------------------------------------------------------------------------- audio in


def read_audio(
    path: str | os.PathLike,
    sample_rate: int = SAMPLE_RATE,
    start: float = 0.0,
    seconds: float | None = None,
    mono: bool = True,
) -> torch.Tensor:
    """Audio (1, samples) float in [-1, 1] at ``sample_rate`` (resampled with torchaudio).

    ``start`` (seconds >= 0) and ``seconds`` (> 0, default: to the end) cut the track; a span
    that runs past the end of the track is cut there (never padded; :func:`load_clip` pads a
    clip's sound). Raises :class:`MediaError` (``no_audio``) when the file has no audio track
    and (``too_short``) when ``start`` is at or past its end; a bad argument (a negative or
    non-finite ``start`` or ``seconds``, ``sample_rate`` < 1) is a :class:`ConfigError`.
    """
    import av
    import torchaudio

    sample_rate = _check_sample_rate(sample_rate)
    start = _check_start(start)
    if seconds is not None and not (_is_real(seconds) and math.isfinite(seconds) and seconds > 0):
        raise ConfigError("seconds", seconds, "a positive, finite duration (or None: to the end)")
    chunks: list[np.ndarray] = []
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError(path, "no_audio", "has no audio track")
        stream = container.streams.audio[0]
        native = stream.rate
        first_time = None
        try:
            for frame in container.decode(stream):
                if first_time is None:
                    first_time = frame.time or 0.0
                chunks.append(_planar_float(frame))
        except av.error.FFmpegError as exc:
            raise MediaError(path, "corrupt", f"cannot decode its audio ({exc})") from None
        declared = (
            round(float(stream.duration * stream.time_base) * native)
            if stream.duration and stream.time_base
            else None
        )
    if not chunks:
        raise MediaError(path, "no_audio", "has an audio track with no samples")
    audio = torch.from_numpy(np.concatenate(chunks, axis=1))
    # Place the first decoded sample at its timestamp (AAC streams may start late or early).
    shift = round((first_time or 0.0) * native)
    if shift > 0:
        audio = torch.nn.functional.pad(audio, (shift, 0))
    elif shift < 0:
        audio = audio[:, -shift:]
    if declared is not None and declared > 0:
        audio = audio[:, :declared]  # the encoder's padding of the last frame is not sound
    if mono:
        audio = audio.mean(dim=0, keepdim=True)
    if native != sample_rate:
        audio = torchaudio.functional.resample(audio, native, sample_rate)
    first = round(start * sample_rate)
    if first >= audio.shape[-1]:
        length = audio.shape[-1] / sample_rate
        raise MediaError(
            path, "too_short", f"has {length:g} s of audio; start={start:g} s is past its end"
        )
    last = None if seconds is None else first + round(seconds * sample_rate)
    return audio[:, first:last].clamp_(-1.0, 1.0).contiguous()


def _planar_float(frame) -> np.ndarray:
    """(channels, samples) float32 from any sample format."""
    array = frame.to_ndarray()
    name = frame.format.name
    if not frame.format.is_planar:
        array = array.reshape(-1, frame.layout.nb_channels).T
    if name.startswith(("s16",)):
        array = array.astype(np.float32) / 32768.0
    elif name.startswith("s32"):
        array = array.astype(np.float32) / 2147483648.0
    elif name.startswith("u8"):
        array = (array.astype(np.float32) - 128.0) / 128.0
    return np.ascontiguousarray(array, dtype=np.float32)


# ---------------------------------------------------------------------------- clips


def load_clip(
    path: str | os.PathLike,
    format: Format,
    start: float = 0.0,
    audio: bool | None = None,
    fps: float = FPS,
    sample_rate: int = SAMPLE_RATE,
    min_side: int = MIN_SOURCE_SIDE,
) -> Clip:
    """One clip of ``format`` starting ``start`` seconds in.

    ``audio=True``: the clip needs sound (a file without an audio track is an error);
    ``None``: sound if the file has some; ``False``: no sound. A file shorter than the clip
    is an error (``too_short``), never a silently shorter clip, and so is a ``start`` at or past
    its end; a negative ``start`` is a :class:`ConfigError`. A picture smaller than ``min_side``
    pixels is an error (``too_small``), as in :func:`read_frames`.
    """
    start = _check_start(start)
    fps = _check_fps(fps)
    sample_rate = _check_sample_rate(sample_rate)
    info = probe(path)
    if not info.has_video:
        raise MediaError(path, "no_video", "has no video stream")
    if audio and not info.has_audio:
        raise MediaError(path, "no_audio", "has no audio track, which this task needs")
    if info.duration > 0 and start >= info.duration:
        raise MediaError(
            path, "too_short", f"lasts {info.duration:g} s; start={start:g} s is past its end"
        )
    size = (format.height, format.width)
    frames = read_frames(path, fps, size, start, format.frames, min_side=min_side)
    if frames.shape[0] < format.frames:
        raise MediaError(
            path,
            "too_short",
            f"gives {frames.shape[0]} frames at {fps:g} fps from {start:g} s; the format "
            f"{format} needs {format.frames} ({format.frames / fps:g} s)",
        )
    sound = None
    if info.has_audio and audio is not False:
        seconds = format.frames / fps
        sound = read_audio(path, sample_rate, start, seconds)
        want = round(seconds * sample_rate)
        if sound.shape[-1] < want:  # a track that ends a little before the picture
            sound = torch.nn.functional.pad(sound, (0, want - sound.shape[-1]))
    return Clip(str(path), start, frames, fps, sound, sample_rate)


def clip_starts(
    total_frames: int, length: int, stride: int | None = None, path: str | os.PathLike = "?"
) -> list[int]:
    """First frame of each ``length``-frame clip in ``total_frames`` (non-overlapping by
    default; ``stride`` frames apart otherwise)."""
    if total_frames < length:
        raise MediaError(path, "too_short", f"has {total_frames} frames; a clip needs {length}")
    stride = stride or length
    return list(range(0, total_frames - length + 1, stride))


def cut_clips(
    frames: torch.Tensor, length: int, stride: int | None = None, path: str | os.PathLike = "?"
) -> torch.Tensor:
    """(N, length, H, W, 3) clips cut from (T, H, W, 3) frames (17 or 41 for the paper)."""
    starts = clip_starts(frames.shape[0], length, stride, path)
    return torch.stack([frames[s : s + length] for s in starts])


def frames_to_tensor(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, 3) → float (3, T, H, W) in [-1, 1] (what the tokenizers take)."""
    return frames.permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


def tensor_to_frames(video: torch.Tensor) -> torch.Tensor:
    """float (3, T, H, W) in [-1, 1] → uint8 (T, H, W, 3); values outside are clipped."""
    if video.dim() != 4 or video.shape[0] != 3:
        raise ConfigError("video", tuple(video.shape), "a (3, frames, height, width) tensor")
    scaled = (video.detach().float().clamp(-1, 1) + 1.0) * 127.5
    return scaled.round().to(torch.uint8).permute(1, 2, 3, 0).contiguous()


# ---------------------------------------------------------------------------- writing


@contextmanager
def _atomic_target(path: str | os.PathLike) -> Iterator[Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, umask_mode())  # mkstemp's 0600 would hide the output from other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _as_frames(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    array = frames.detach().cpu().numpy() if torch.is_tensor(frames) else np.asarray(frames)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ConfigError(
            "frames", f"{array.dtype} {tuple(array.shape)}", "uint8 (frames, height, width, 3)"
        )
    return array


def _as_audio(audio: torch.Tensor | np.ndarray) -> np.ndarray:
    array = audio.detach().float().cpu().numpy() if torch.is_tensor(audio) else np.asarray(audio)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[0] not in (1, 2):
        raise ConfigError("audio", tuple(array.shape), "(channels, samples) with 1 or 2 channels")
    if not np.isfinite(array).all():
        raise ConfigError("audio", "non-finite samples", "finite values in [-1, 1]")
    return np.clip(array, -1.0, 1.0).astype(np.float32)


def write_mp4(
    path: str | os.PathLike,
    frames: torch.Tensor | np.ndarray,
    fps: float = FPS,
    audio: torch.Tensor | np.ndarray | None = None,
    sample_rate: int = SAMPLE_RATE,
    crf: int = 18,
) -> Path:
    """H.264 video (yuv420p) with an optional AAC track, muxed in one MP4."""
    import av

    video = _as_frames(frames)
    _, height, width, _ = video.shape
    if height % 2 or width % 2:
        raise ConfigError("frames", f"{height}x{width}", "an even height and width (yuv420p)")
    rate = Fraction(fps).limit_denominator(1001)
    with _atomic_target(path) as tmp, av.open(str(tmp), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=rate, options={"crf": str(crf)})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        sound = None
        if audio is not None:
            samples = _as_audio(audio)
            sound = out.add_stream("aac", rate=sample_rate)
            sound.layout = "mono" if samples.shape[0] == 1 else "stereo"
        for index, array in enumerate(video):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        if sound is not None:
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples), format="fltp", layout=sound.layout.name
            )
            frame.sample_rate, frame.pts = sample_rate, 0
            out.mux(sound.encode(frame))
            out.mux(sound.encode())
    return Path(path)


def write_wav(
    path: str | os.PathLike, audio: torch.Tensor | np.ndarray, sample_rate: int = SAMPLE_RATE
) -> Path:
    """16-bit PCM WAV (the standard library's writer: no codec needed)."""
    samples = _as_audio(audio)
    pcm = np.round(samples.T * 32767.0).astype("<i2")
    with _atomic_target(path) as tmp, wave.open(str(tmp), "wb") as handle:
        handle.setnchannels(samples.shape[0])
        handle.setsampwidth(2)
        handle.setframerate(sample_rate)
        handle.writeframes(pcm.tobytes())
    return Path(path)


def write_png(path: str | os.PathLike, frame: torch.Tensor | np.ndarray) -> Path:
    """One RGB frame (H, W, 3) uint8 as PNG."""
    import av

    array = _as_frames(frame)
    if array.shape[0] != 1:
        raise ConfigError("frame", tuple(array.shape), "one (height, width, 3) frame")
    with _atomic_target(path) as tmp, av.open(str(tmp), "w", format="image2") as out:
        stream = out.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = array.shape[2], array.shape[1], "rgb24"
        out.mux(stream.encode(av.VideoFrame.from_ndarray(array[0], format="rgb24")))
        out.mux(stream.encode())
    return Path(path)


def write_gif(path: str | os.PathLike, frames: torch.Tensor | np.ndarray, fps: float = FPS) -> Path:
    """An animated GIF (8-bit colour, loops forever)."""
    import av

    video = _as_frames(frames)
    rate = Fraction(fps).limit_denominator(1001)
    with _atomic_target(path) as tmp, av.open(str(tmp), "w", format="gif") as out:
        stream = out.add_stream("gif", rate=rate)
        stream.width, stream.height, stream.pix_fmt = video.shape[2], video.shape[1], "rgb8"
        for index, array in enumerate(video):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24").reformat(format="rgb8")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return Path(path)


def write_media(
    path: str | os.PathLike,
    frames: torch.Tensor | np.ndarray | None = None,
    audio: torch.Tensor | np.ndarray | None = None,
    fps: float = FPS,
    sample_rate: int = SAMPLE_RATE,
) -> Path:
    """Write by suffix: ``.mp4`` (video + optional audio), ``.wav``, ``.png``, ``.gif``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".mp4" and frames is not None:
        return write_mp4(path, frames, fps, audio, sample_rate)
    if suffix == ".wav" and audio is not None:
        return write_wav(path, audio, sample_rate)
    if suffix == ".png" and frames is not None:
        array = _as_frames(frames)
        return write_png(path, array[:1])
    if suffix == ".gif" and frames is not None:
        return write_gif(path, frames, fps)
    raise ConfigError(
        "path", str(path), ".mp4 (frames, audio optional), .wav (audio), .png or .gif (frames)"
    )


def duration_frames(seconds: float, fps: float = FPS) -> int:
    """Whole frames at ``fps`` in ``seconds`` (the last partial frame dropped)."""
    return math.floor(seconds * fps + 1e-9)
