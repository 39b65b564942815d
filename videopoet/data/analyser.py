"""The world's analyser: measures a clip and its sound without any pretrained network.

It reads any clip (the world's, a generated one, or a real file read with
:mod:`videopoet.data.media`) back into the quantities the world is made of, so evaluation can
ask "is it the red circle moving left that the caption asked for, and does its sound follow it?"
with plain arithmetic:

- **background**: a vertical linear colour ramp fitted to the clip's border pixels (all frames),
  named after the nearest of :data:`world.BACKGROUNDS <videopoet.data.world.BACKGROUNDS>`;
- **per frame**, the main object, i.e. the largest connected region of one palette colour: each
  pixel is *unmixed* against the background (the palette colour whose line background→colour
  passes nearest to the pixel, and the coverage ``alpha`` along that line, which undoes
  anti-aliasing and blur); a region grows from pixels at least :data:`FOREGROUND` from the
  background with ``alpha >= 0.5`` (8-connected). From its coverage: centre (coverage-weighted
  centroid, pixel centres at ``i + 0.5`` like the world), size (``sqrt`` of the summed
  coverage, in pixels), colour (the palette colour nearest in RGB to the median of its
  fully covered pixels), shape (a triangle's coverage is skewed towards its base, squares and
  circles are symmetric; of those, the fill ratio ``area / (widest row × tallest column)`` is 1
  for a square and pi/4 for a circle) and a confidence (how near that median is to the palette);
- **per clip**: colour and shape (votes over frames), and the motion class from the centre and
  size trajectories (:func:`classify_motion`, thresholds relative to ``min(H, W)``);
- **audio**: pitch per 50 Hz frame (YIN on 1024-sample windows, hop 320 at 16 kHz, 60-1200 Hz)
  and loudness (RMS); silent or aperiodic frames have NaN pitch;
- **scores**: :func:`score_clip` (does a clip show what a caption says),
  :func:`pitch_height_correlation` (does the pitch follow the object's height) and
  :func:`pitch_correlation` (do two sounds have the same melody).

Nothing raises on a clip without an object: the measures are NaN and the classes ``None``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from videopoet.data import world
from videopoet.data.captions import parse_caption

#: palette colours (K, 3) in [0, 1] and their names, in :data:`world.COLORS` order
PALETTE_NAMES: tuple[str, ...] = tuple(world.COLORS)
PALETTE = np.asarray(list(world.COLORS.values()), np.float32)
BACKGROUND_NAMES: tuple[str, ...] = tuple(world.BACKGROUNDS)
BACKGROUND_PALETTE = np.asarray(list(world.BACKGROUNDS.values()), np.float32)

# ---- thresholds (colours in RGB [0, 1] units; lengths as fractions of min(H, W) = "unit")
#: RGB distance from the background from which a pixel counts as foreground
FOREGROUND = 0.2
#: smallest object: summed coverage in unit² (about 6 px² at 64 × 64)
MIN_AREA = 0.0015
#: |skewness| of the coverage's row (or column) profile from which a shape is a triangle: an
#: upright triangle's mass grows linearly towards its base (skewness -2 sqrt(2) / 5 = -0.57),
#: squares and circles are symmetric (0); blur and noise keep it (measured -0.51 .. -0.58)
TRIANGLE_SKEW = 0.28
#: fill ratio from which a symmetric shape is a square (geometric mean of 1 and pi/4 = 0.785)
SQUARE_FILL = math.sqrt(math.pi / 4)
#: net displacement over the clip (units) from which an object moves; the world's travel is
#: ``world.SPEED`` = 0.028 unit per frame, capped so the whole path fits (about 0.45 unit for
#: 17 and 41 frames)
MOVE = 0.04
#: |log(size ratio)| over the clip from which an object grows/shrinks; the world's is
#: ln 1.6 = 0.47 growing, ln 0.6 = -0.51 shrinking over 17 or more frames
GROW = 0.05
#: residual standard deviation of the height after a straight-line fit (units) from which a
#: vertical movement is a bounce; the world's bounces are 0.28-0.35 unit high (std >= 0.08)
BOUNCE = 0.04
#: the world's totals, to weigh translation against growth when both are seen
_TRAVEL_REF, _GROWTH_REF = 0.45, math.log(1.6)

AUDIO_RATE = 16_000
HOP = 320  # 50 frames per second at 16 kHz
WINDOW = 1024
PITCH_RANGE = (60.0, 1200.0)
#: YIN: cumulative-mean-normalized difference below which a lag is a period
YIN_THRESHOLD = 0.15
#: YIN: frames whose best lag scores above this are unvoiced
YIN_VOICED = 0.35
SILENCE_RMS = 1e-3


# ---------------------------------------------------------------------------- results


@dataclass
class VideoAnalysis:
    """Measurements of a clip: per-frame arrays of length T and per-clip classes."""

    frames: int
    height: int
    width: int
    background: str | None  # nearest of world.BACKGROUNDS
    background_rgb: np.ndarray  # (3,) fitted background colour at mid-height, [0, 1]
    present: np.ndarray  # (T,) bool: an object was found
    colors: list[str | None]  # (T,) palette name per frame
    shapes: list[str | None]  # (T,) shape class per frame
    centers: np.ndarray  # (T, 2) (x, y) in pixels, NaN where absent
    sizes: np.ndarray  # (T,) sqrt(area) in pixels, NaN where absent
    fill: np.ndarray  # (T,) area / (widest row x tallest column)
    skew: np.ndarray  # (T,) larger |skewness| of the row and column coverage profiles
    confidence: np.ndarray  # (T,) in [0, 1], 0 where absent
    color: str | None  # clip: area-weighted vote over frames
    shape: str | None  # clip: from the median fill ratio and skewness
    motion: str | None  # clip: see classify_motion; None for 1-frame clips
    trajectory: dict[str, float] = field(default_factory=dict)  # the motion features

    @property
    def unit(self) -> int:
        return min(self.height, self.width)

    @property
    def found(self) -> bool:
        return bool(self.present.any())


@dataclass
class AudioAnalysis:
    """Pitch and loudness per audio frame (50 per second), centred at ``times``."""

    times: np.ndarray  # (N,) seconds
    pitch_hz: np.ndarray  # (N,) NaN where unvoiced or silent
    loudness: np.ndarray  # (N,) RMS in [0, 1]
    sample_rate: int = AUDIO_RATE

    def pitch_at(self, times: np.ndarray | list[float]) -> np.ndarray:
        """Pitch at ``times`` (seconds), interpolated over voiced frames (NaN if none near)."""
        times = np.asarray(times, np.float64)
        voiced = np.isfinite(self.pitch_hz)
        out = np.full(times.shape, np.nan)
        if voiced.sum() < 1:
            return out
        vt, vp = self.times[voiced], np.log2(self.pitch_hz[voiced])
        out = 2.0 ** np.interp(times, vt, vp)
        # no voiced frame within two frames: unknown
        step = self.times[1] - self.times[0] if len(self.times) > 1 else 1.0
        nearest = np.abs(times[:, None] - vt[None]).min(1)
        out[nearest > 2.01 * step] = np.nan
        return out

    def pitch_at_frames(self, frames: int, fps: int = world.FPS) -> np.ndarray:
        """Pitch at video frame times ``t / fps``."""
        return self.pitch_at(np.arange(frames) / fps)


# ---------------------------------------------------------------------------- video in


def _to_rgb(
    video: torch.Tensor | np.ndarray | str | os.PathLike,
    size: tuple[int, int] | None = None,
    frames: int | None = None,
) -> np.ndarray:
    """(T, H, W, 3) float32 in [0, 1] from a (3, T, H, W) / (3, H, W) clip in [-1, 1] or a file
    (read at 8 fps, resized to cover ``size`` and centre-cropped, ``frames`` at most)."""
    if isinstance(video, (str, os.PathLike)):
        from videopoet.data.media import read_frames

        return read_frames(video, size=size, frames=frames).numpy().astype(np.float32) / 255.0
    array = video.detach().float().cpu().numpy() if torch.is_tensor(video) else np.asarray(video)
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4 or array.shape[0] != 3:
        from videopoet.core.errors import ConfigError

        raise ConfigError("video", tuple(array.shape), "a (3, frames, height, width) clip")
    return np.clip((array.transpose(1, 2, 3, 0) + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)


def _background(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row background (H, 3) fitted to the border pixels, and its mid-height colour (3,)."""
    _, height, width, _ = rgb.shape
    rows = np.arange(height, dtype=np.float32)
    pix = [rgb[:, 0], rgb[:, -1], rgb[:, :, 0], rgb[:, :, -1]]
    ys = [np.zeros(width), np.full(width, height - 1), rows, rows]
    colours = np.concatenate([p.reshape(-1, 3) for p in pix])
    heights = np.concatenate(
        [np.broadcast_to(y, p.shape[:-1]).reshape(-1) for p, y in zip(pix, ys, strict=True)]
    )
    centre = np.median(colours, 0)
    keep = np.linalg.norm(colours - centre, axis=1) < 0.15
    fitted = np.broadcast_to(centre, (height, 3)).astype(np.float32)
    if keep.sum() >= 8 and np.ptp(heights[keep]) > 0:
        pos = (heights[keep] + 0.5) / height - 0.5
        design = np.stack([np.ones_like(pos), pos], 1)
        coef, *_ = np.linalg.lstsq(design, colours[keep], rcond=None)  # (2, 3)
        fitted = (coef[0] + ((rows + 0.5) / height - 0.5)[:, None] * coef[1]).astype(np.float32)
        centre = coef[0]
    return fitted, np.clip(centre, 0, 1).astype(np.float32)


def _unmix(diff: np.ndarray, bg: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best palette index and coverage of pixels ``diff`` (N, 3) = pixel - background.

    A pixel of coverage ``alpha`` over the background lies on the line from the background
    to its colour: the label is the palette line passing nearest, ``alpha`` the position along
    it (clipped to [0, 1]). ``rows`` (N,) are the pixels' rows, for the background (H, 3).
    """
    lines = PALETTE[None, :, :] - bg[rows][:, None, :]  # (N, K, 3)
    norm2 = np.maximum((lines * lines).sum(-1), 1e-6)  # (N, K)
    dot = np.einsum("nc,nkc->nk", diff, lines)
    alpha = np.clip(dot / norm2, 0.0, 1.0)
    # |diff - alpha * line|^2 without building the vectors
    resid = (diff * diff).sum(-1, keepdims=True) + alpha * (alpha * norm2 - 2 * dot)
    label = np.argmin(resid, -1)
    return label, np.take_along_axis(alpha, label[:, None], -1)[:, 0]


def _max3(values: np.ndarray) -> np.ndarray:
    """3 x 3 maximum filter over the last two axes (zero outside), separable."""
    padded = np.pad(values, [(0, 0)] * (values.ndim - 2) + [(1, 1), (1, 1)])
    rows = np.maximum(np.maximum(padded[..., :-2, :], padded[..., 1:-1, :]), padded[..., 2:, :])
    return np.maximum(np.maximum(rows[..., :-2], rows[..., 1:-1]), rows[..., 2:])


def _components(mask: np.ndarray) -> np.ndarray:
    """8-connected component ids (N, H, W) of a boolean mask (N, H, W), 0 outside.

    Each pixel starts with its own position as id; every round takes the largest id among the
    8 neighbours inside the mask, then jumps to the id that pixel holds (pointer jumping), so a
    region settles on its largest position in a few rounds. Ids are unique within a frame.
    """
    count, height, width = mask.shape
    positions = np.arange(1, height * width + 1, dtype=np.int64).reshape(height, width)
    table = np.where(mask, positions, 0).reshape(count, -1)
    rows = np.arange(count)[:, None]
    for _ in range(height * width):
        grown = np.where(mask, _max3(table.reshape(mask.shape)), 0).reshape(count, -1)
        jumped = np.where(grown > 0, grown[rows, np.maximum(grown - 1, 0)], 0)
        if np.array_equal(jumped, table):
            break
        table = jumped
    return table.reshape(mask.shape)


def _regions(core: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Ids (T, H, W) of the one-colour 8-connected regions of ``core``, unique in a frame.

    Each colour is flooded on its own, in the box its pixels span over the clip (distractors
    are small and still, the main object's box is its path), and ids are mapped back to
    positions in the whole frame, so no two regions of a frame share an id.
    """
    frames, height, width = core.shape
    out = np.zeros(core.shape, np.int64)
    for k in np.unique(label[core]):
        mask = core & (label == k)
        used = np.nonzero(mask.any((1, 2)))[0]
        ys, xs = np.nonzero(mask.any((0, 2)))[0], np.nonzero(mask.any((0, 1)))[0]
        box = (slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
        crop = _components(mask[used][:, box[0], box[1]])  # positions in the box, 1-based
        row, col = np.divmod(np.maximum(crop - 1, 0), xs[-1] + 1 - xs[0])
        whole = (row + ys[0]) * width + col + xs[0] + 1
        out[used, box[0], box[1]] += np.where(crop > 0, whole, 0)
    return out


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """Square dilation of a (T, H, W) mask by ``steps`` pixels."""
    for _ in range(steps):
        mask = _max3(mask)
    return mask


def _shape_of(fill: float, skew: float) -> str | None:
    if not (math.isfinite(fill) and math.isfinite(skew)):
        return None
    if skew >= TRIANGLE_SKEW:
        return "triangle"
    return "square" if fill >= SQUARE_FILL else "circle"


def _skewness(profile: np.ndarray) -> np.ndarray:
    """Skewness of each row of ``profile`` (N, L) seen as a distribution over positions."""
    pos = np.arange(profile.shape[-1]) + 0.5
    weight = profile / np.maximum(profile.sum(-1, keepdims=True), 1e-9)
    centred = pos - (weight * pos).sum(-1, keepdims=True)
    var = (weight * centred**2).sum(-1)
    return (weight * centred**3).sum(-1) / np.maximum(var, 1e-9) ** 1.5


def _nearest(rgb: np.ndarray, palette: np.ndarray) -> tuple[int, float]:
    dist = np.linalg.norm(palette - rgb[None], axis=1)
    k = int(np.argmin(dist))
    return k, float(dist[k])


def _largest(comps: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Per frame, the id (0 if none) of the region with the largest summed ``weight``."""
    frames, height, width = comps.shape
    on = comps > 0
    if not on.any():
        return np.zeros(frames, np.int64)
    keys = np.nonzero(on)[0] * (height * width + 1) + comps[on]
    uniq, inverse = np.unique(keys, return_inverse=True)
    sums = np.bincount(inverse, weight[on], len(uniq))
    frame_of, ids = uniq // (height * width + 1), uniq % (height * width + 1)
    order = np.lexsort((sums, frame_of))  # by frame, then by size: the last of a frame wins
    frame_of, ids = frame_of[order], ids[order]
    last = np.append(frame_of[1:] != frame_of[:-1], True)
    best = np.zeros(frames, np.int64)
    best[frame_of[last]] = ids[last]
    return best


def _segment(rgb: np.ndarray, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The main object's region (T, H, W) bool and its palette index per frame (T,), -1 if
    none: the largest one-colour region of each frame, with its rim."""
    frames, height, width, _ = rgb.shape
    diff = rgb - bg[None, :, None, :]
    dist = np.sqrt((diff * diff).sum(-1))
    fg = dist >= FOREGROUND
    label = np.full(fg.shape, -1, np.int64)
    alpha = np.zeros(fg.shape, np.float32)
    if fg.any():
        label[fg], alpha[fg] = _unmix(diff[fg], bg, np.nonzero(fg)[1])
    core = alpha >= 0.5
    comps = _regions(core, label)
    best = _largest(comps, alpha)
    core = (comps == best[:, None, None]) & (best[:, None, None] > 0)
    first = core.reshape(frames, -1).argmax(1)
    colour = np.where(best > 0, label.reshape(frames, -1)[np.arange(frames), first], -1)
    # the region: the core dilated over its anti-aliased (or blurred) rim, without pixels
    # that clearly belong to another colour
    region = _dilate(core, 2) & ((label == colour[:, None, None]) | ~fg)
    return region & (colour >= 0)[:, None, None], colour


def _coverage(rgb: np.ndarray, bg: np.ndarray, region: np.ndarray, colour: np.ndarray):
    """Coverage (T, H, W) of each frame's palette colour over the background, in ``region``."""
    lines = PALETTE[np.maximum(colour, 0)][:, None, :] - bg[None]  # (T, H, 3)
    norm2 = np.maximum((lines * lines).sum(-1), 1e-6)  # (T, H)
    dot = np.einsum("thwc,thc->thw", rgb - bg[None, :, None, :], lines)
    return np.where(region, np.clip(dot / norm2[..., None], 0.0, 1.0), 0.0)


def _frame_colour(rgb: np.ndarray, cover: np.ndarray) -> tuple[str | None, float]:
    """Palette name nearest to the median of a frame's fully covered pixels, and confidence."""
    solid = cover >= 0.9
    if solid.sum() < 3:
        solid = cover >= 0.5
    if not solid.any():
        return None, 0.0
    index, error = _nearest(np.median(rgb[solid], 0), PALETTE)
    return PALETTE_NAMES[index], max(0.0, 1.0 - error / 0.3)


def analyse_video(
    video: torch.Tensor | np.ndarray | str | os.PathLike,
    size: tuple[int, int] | None = None,
    frames: int | None = None,
) -> VideoAnalysis:
    """Measure a clip: a (3, T, H, W) tensor in [-1, 1] (an image may be (3, H, W)) or a file.

    A file is read at 8 fps; ``size=(height, width)`` and ``frames`` limit what is read of it
    (a real video at full resolution is large).
    """
    rgb = _to_rgb(video, size, frames)
    frames, height, width, _ = rgb.shape
    unit = min(height, width)
    bg, bg_mid = _background(rgb)
    region, colour = _segment(rgb, bg)
    cover = _coverage(rgb, bg, region, colour)
    area = cover.sum((1, 2))
    present = (colour >= 0) & (area >= MIN_AREA * unit * unit)
    safe = np.where(present, area, 1.0)
    cx = (cover.sum(1) * (np.arange(width) + 0.5)).sum(1) / safe
    cy = (cover.sum(2) * (np.arange(height) + 0.5)).sum(1) / safe
    nan = np.full(frames, np.nan)
    centers = np.where(present[:, None], np.stack([cx, cy], 1), np.nan)
    sizes = np.where(present, np.sqrt(area), nan)
    spans = cover.sum(2).max(1) * cover.sum(1).max(1)  # widest row x tallest column
    fill = np.where(present, area / np.maximum(spans, 1e-9), nan)
    skew = np.maximum(np.abs(_skewness(cover.sum(2))), np.abs(_skewness(cover.sum(1))))
    skew = np.where(present, skew, nan)
    named = [_frame_colour(rgb[t], cover[t]) if present[t] else (None, 0.0) for t in range(frames)]
    votes: dict[str, float] = {}
    for (name, _), weight, here in zip(named, area, present, strict=True):
        if here and name is not None:
            votes[name] = votes.get(name, 0.0) + float(weight)
    clip_fill = float(np.median(fill[present])) if present.any() else math.nan
    clip_skew = float(np.median(skew[present])) if present.any() else math.nan
    motion, features = classify_motion(centers, sizes, unit, present)
    return VideoAnalysis(
        frames=frames,
        height=height,
        width=width,
        background=BACKGROUND_NAMES[_nearest(bg_mid, BACKGROUND_PALETTE)[0]],
        background_rgb=bg_mid,
        present=present,
        colors=[name for name, _ in named],
        shapes=[_shape_of(f, k) for f, k in zip(fill, skew, strict=True)],
        centers=centers,
        sizes=sizes,
        fill=fill,
        skew=skew,
        confidence=np.array([c for _, c in named], np.float64),
        color=max(votes, key=votes.get) if votes else None,
        shape=_shape_of(clip_fill, clip_skew),
        motion=motion if frames > 1 else None,
        trajectory=features,
    )


# ---------------------------------------------------------------------------- motion


def _line(t: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """(slope, residual standard deviation) of a least-squares line."""
    slope, offset = np.polyfit(t, values, 1)
    return float(slope), float(np.std(values - (slope * t + offset)))


def classify_motion(
    centers: np.ndarray,
    sizes: np.ndarray,
    unit: int,
    present: np.ndarray | None = None,
) -> tuple[str | None, dict[str, float]]:
    """Motion class of a trajectory, and the features it was read from.

    Over the frames where the object is present (at least two, else ``None``), with lengths
    in units of ``unit = min(H, W)``: a straight line is fitted to x, y and log(size) against
    the frame index; ``dx, dy, growth`` are the fitted changes over the whole clip.

    1. ``bouncing`` if the height's residual around its line has std >= :data:`BOUNCE`
       (and more than twice the horizontal one);
    2. ``growing``/``shrinking`` if ``|growth| >= GROW`` and growth dominates translation
       (each relative to the world's totals, ln 1.6 and 0.45 unit);
    3. ``left``/``right``/``up``/``down`` along the larger of ``|dx|, |dy|`` if it is
       >= :data:`MOVE`;
    4. ``still`` otherwise.
    """
    frames = len(sizes)
    valid = np.isfinite(sizes) & np.isfinite(centers).all(1)
    if present is not None:
        valid &= present
    if valid.sum() < 2:
        return None, {}
    t = np.arange(frames, dtype=np.float64)[valid]
    span = frames - 1
    sx, rx = _line(t, centers[valid, 0] / unit)
    sy, ry = _line(t, centers[valid, 1] / unit)
    sg, _ = _line(t, np.log(np.maximum(sizes[valid], 1e-6)))
    features = {"dx": sx * span, "dy": sy * span, "growth": sg * span, "rx": rx, "ry": ry}
    travel = max(abs(features["dx"]), abs(features["dy"]))
    growth = features["growth"]
    if valid.sum() >= 4 and ry >= BOUNCE and ry > 2 * rx:
        return "bouncing", features
    if abs(growth) >= GROW and abs(growth) / _GROWTH_REF >= travel / _TRAVEL_REF:
        return ("growing" if growth > 0 else "shrinking"), features
    if travel >= MOVE:
        if abs(features["dx"]) >= abs(features["dy"]):
            return ("right" if features["dx"] > 0 else "left"), features
        return ("down" if features["dy"] > 0 else "up"), features
    return "still", features


# ---------------------------------------------------------------------------- audio


def _to_mono(audio: torch.Tensor | np.ndarray | str | os.PathLike, sample_rate: int) -> np.ndarray:
    """(samples,) float64 at 16 kHz from a (channels, samples) / (samples,) signal or a file."""
    if isinstance(audio, (str, os.PathLike)):
        from videopoet.data.media import read_audio

        return read_audio(audio, AUDIO_RATE)[0].numpy().astype(np.float64)
    signal = audio.detach().float().cpu() if torch.is_tensor(audio) else torch.as_tensor(audio)
    signal = signal.float()
    if signal.dim() == 2:
        signal = signal.mean(0)
    if sample_rate != AUDIO_RATE:
        import torchaudio

        signal = torchaudio.functional.resample(signal, sample_rate, AUDIO_RATE)
    return signal.numpy().astype(np.float64).reshape(-1)


def _frames(signal: np.ndarray) -> np.ndarray:
    """(N, WINDOW) windows centred at multiples of HOP (zero-padded at the ends)."""
    count = len(signal) // HOP + 1
    padded = np.pad(signal, (WINDOW // 2, WINDOW // 2 + HOP))
    index = np.arange(count)[:, None] * HOP + np.arange(WINDOW)[None]
    return padded[index]


def _yin(windows: np.ndarray) -> np.ndarray:
    """Fundamental (Hz) of each window by YIN (de Cheveigné & Kawahara 2002); NaN if aperiodic."""
    lo = int(math.floor(AUDIO_RATE / PITCH_RANGE[1]))
    hi = int(math.ceil(AUDIO_RATE / PITCH_RANGE[0]))
    span = WINDOW - hi - 2  # integration length: lags up to hi + 1 fit in the window
    size = 1 << int(math.ceil(math.log2(WINDOW + span)))
    head = np.fft.rfft(windows[:, :span], size)
    full = np.fft.rfft(windows, size)
    corr = np.fft.irfft(np.conj(head) * full, size)[:, : hi + 2]  # r(tau), tau = 0..hi+1
    energy = np.cumsum(np.pad(windows * windows, ((0, 0), (1, 0))), 1)
    lags = np.arange(hi + 2)
    e_tau = energy[:, lags + span] - energy[:, lags]  # sum of x^2 over [tau, tau + span)
    diff = np.maximum(e_tau[:, :1] + e_tau - 2 * corr, 0.0)
    running = np.cumsum(diff[:, 1:], 1)
    cmnd = np.ones_like(diff)
    cmnd[:, 1:] = diff[:, 1:] * lags[1:] / np.maximum(running, 1e-12)
    out = np.full(len(windows), np.nan)
    for n, curve in enumerate(cmnd):
        below = np.nonzero(curve[lo : hi + 1] < YIN_THRESHOLD)[0]
        tau = lo + int(below[0]) if len(below) else lo + int(np.argmin(curve[lo : hi + 1]))
        while tau + 1 <= hi and curve[tau + 1] < curve[tau]:  # walk down to the dip's bottom
            tau += 1
        if curve[tau] > YIN_VOICED:
            continue
        a, b, c = curve[tau - 1], curve[tau], curve[tau + 1]
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom > 1e-12 else 0.0
        out[n] = AUDIO_RATE / (tau + float(np.clip(shift, -1, 1)))
    return out


def analyse_audio(
    audio: torch.Tensor | np.ndarray | str | os.PathLike, sample_rate: int = AUDIO_RATE
) -> AudioAnalysis:
    """Pitch (Hz, NaN if unvoiced or silent) and loudness (RMS) every 20 ms of a sound."""
    signal = _to_mono(audio, sample_rate)
    windows = _frames(signal)
    loud = np.sqrt((windows * windows).mean(1))
    pitch = _yin(windows)
    pitch[loud < SILENCE_RMS] = np.nan
    times = np.arange(len(windows)) * HOP / AUDIO_RATE
    return AudioAnalysis(times=times, pitch_hz=pitch, loudness=loud, sample_rate=AUDIO_RATE)


# ---------------------------------------------------------------------------- scores


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return math.nan
    a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 1e-12 else math.nan


def _video(video) -> VideoAnalysis:
    return video if isinstance(video, VideoAnalysis) else analyse_video(video)


def _audio(audio, sample_rate: int) -> AudioAnalysis:
    return audio if isinstance(audio, AudioAnalysis) else analyse_audio(audio, sample_rate)


def score_clip(video, caption: str) -> dict[str, object]:
    """How a clip matches a caption: the measured classes, a match per named attribute.

    ``color_match``/``shape_match``/``motion_match`` are ``None`` where the caption names no
    such attribute (images name no motion); ``score`` is the mean of the others (NaN if none).
    ``video`` is a clip, a file path or a :class:`VideoAnalysis`.
    """
    analysis = _video(video)
    wanted = parse_caption(caption)
    result: dict[str, object] = {
        "color": analysis.color,
        "shape": analysis.shape,
        "motion": analysis.motion,
        "found": analysis.found,
    }
    matches = []
    for key in ("color", "shape", "motion"):
        match = None if wanted[key] is None else wanted[key] == result[key]
        result[f"{key}_match"] = match
        if match is not None:
            matches.append(float(match))
    result["score"] = float(np.mean(matches)) if matches else math.nan
    return result


def pitch_height_correlation(
    video, audio, fps: int = world.FPS, sample_rate: int = AUDIO_RATE
) -> float:
    """Pearson correlation of the object's height (``-y``) and log-pitch at the frame times.

    The world maps height to pitch exponentially, so a sound that follows its object scores
    1. NaN where undefined: no object, no voiced frames, or a height that never changes.
    """
    seen, heard = _video(video), _audio(audio, sample_rate)
    pitch = heard.pitch_at_frames(seen.frames, fps)
    return _pearson(-seen.centers[:, 1], np.log2(pitch))


def pitch_correlation(audio_a, audio_b, sample_rate: int = AUDIO_RATE) -> float:
    """Pearson correlation of two sounds' log-pitch contours over their common voiced frames."""
    a, b = _audio(audio_a, sample_rate), _audio(audio_b, sample_rate)
    n = min(len(a.pitch_hz), len(b.pitch_hz))
    return _pearson(np.log2(a.pitch_hz[:n]), np.log2(b.pitch_hz[:n]))
