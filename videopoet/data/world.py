"""The built-in synthetic audiovisual world: the default dataset, no files, no downloads.

Every sample is a pure function of ``(config.seed, index)`` and a format: the same arguments
give bit-identical pixels and samples on any machine. Indices from :data:`EVAL_OFFSET` on are
the held-out split. A sample is a clip of flat-coloured shapes at 8 fps:

- one **main object** (a square, circle or triangle in one of :data:`COLORS`) that moves in a
  named way (:data:`MOTIONS`), nearest to the camera and always wholly in frame;
- up to ``max_distractors`` small static shapes of other colours, farther away (behind it);
- a flat background from :data:`BACKGROUNDS` with a mild vertical shading;
- a **caption** from a small grammar with paraphrases (:mod:`videopoet.data.captions`);
- a **sound track** exactly as long as the clip (16 kHz) that follows the main object: pitch
  follows its height (higher is higher, 220-880 Hz), loudness its size, timbre its shape
  (circle: sine, square: odd harmonics 1/n, triangle: odd harmonics 1/n²), and a click at
  every floor contact of a bouncing object;
- **ground truth** per frame: the main object's mask (anti-aliased coverage), centre and size
  (``sqrt(area)`` in pixels), optical flow and depth (background 1, distractors 0.85-0.95, the
  main object ``0.5 / scale``: growing means approaching).

Images are 1-frame clips (their caption names no motion); audio alone is the sound of a clip.
Clips are ``(3, T, H, W)`` float32 in ``[-1, 1]``; audio is ``(1, samples)`` in ``[-1, 1]``.
Motion rates are per frame and capped so that the whole clip fits: long clips move no faster
than short ones, and the object never leaves the frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from videopoet.core.errors import ConfigError

#: indices from here on are the held-out split
EVAL_OFFSET = 1_000_000_000

#: main-object and distractor colours (RGB in [0, 1]); the names are the captions' words
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.12),
    "orange": (1.00, 0.55, 0.05),
    "yellow": (0.95, 0.92, 0.15),
    "green": (0.15, 0.78, 0.22),
    "cyan": (0.10, 0.85, 0.90),
    "blue": (0.20, 0.35, 1.00),
    "purple": (0.62, 0.22, 0.88),
    "white": (0.96, 0.96, 0.96),
}
BACKGROUNDS: dict[str, tuple[float, float, float]] = {
    "black": (0.04, 0.04, 0.04),
    "dark blue": (0.05, 0.08, 0.32),
    "dark green": (0.04, 0.24, 0.10),
    "gray": (0.38, 0.38, 0.40),
    "brown": (0.32, 0.18, 0.08),
}
SHAPES = ("square", "circle", "triangle")
MOTIONS = ("left", "right", "up", "down", "bouncing", "growing", "shrinking", "still")

FPS = 8
SAMPLE_RATE = 16_000
#: per-frame rates (fractions of min(H, W)), capped per clip so the object stays in frame
SPEED = 0.028
GROWTH = math.log(1.6) / 16  # x1.6 over a 17-frame clip
BOUNCE_PERIOD = 8  # frames between floor contacts (one second)
LOW_HZ, HIGH_HZ = 220.0, 880.0


class WorldConfig(BaseModel):
    """What the world draws; also the ``data:`` section of training YAMLs (``dataset: world``)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = "world"
    seed: int = 0
    colors: tuple[str, ...] = tuple(COLORS)
    backgrounds: tuple[str, ...] = tuple(BACKGROUNDS)
    shapes: tuple[str, ...] = SHAPES
    motions: tuple[str, ...] = MOTIONS
    max_distractors: int = Field(2, ge=0, le=4)
    min_size: float = Field(0.20, gt=0, le=0.35, description="main object sqrt(area) / min(H, W)")
    max_size: float = Field(0.28, gt=0, le=0.35, description="larger would not fit when growing")
    shading: float = Field(0.03, ge=0, le=0.2, description="background top-to-bottom shading")
    fps: int = Field(FPS, ge=1)
    sample_rate: int = Field(SAMPLE_RATE, ge=1000)

    @field_validator("colors", "backgrounds", "shapes", "motions")
    @classmethod
    def _known(cls, value: tuple[str, ...], info) -> tuple[str, ...]:
        known = {"colors": COLORS, "backgrounds": BACKGROUNDS, "shapes": SHAPES}.get(
            info.field_name, MOTIONS
        )
        bad = [v for v in value if v not in known]
        if bad or not value:
            raise ValueError(f"{bad or 'empty'}: expected a non-empty subset of {list(known)}")
        return value


@dataclass
class WorldSample:
    """One sample of the world: media, caption and per-frame ground truth."""

    index: int
    video: torch.Tensor  # (3, T, H, W) float32 in [-1, 1]
    audio: torch.Tensor  # (1, samples) float32 in [-1, 1], samples = T * sample_rate / fps
    caption: str
    color: str
    shape: str
    motion: str
    background: str
    centers: torch.Tensor  # (T, 2) main object's centre (x, y) in pixels
    sizes: torch.Tensor  # (T,) sqrt(area) of the main object in pixels
    masks: torch.Tensor  # (T, H, W) main object's coverage in [0, 1]
    depth: torch.Tensor  # (T, H, W) depth of the visible surface, 0 near .. 1 far
    flow: torch.Tensor  # (T - 1, 2, H, W) (dx, dy) in pixels from frame t to t + 1
    pitch_hz: torch.Tensor  # (T,) the sound's fundamental at each frame
    loudness: torch.Tensor  # (T,) the sound's amplitude at each frame
    bounce_times: list[float] = field(default_factory=list)  # seconds of floor contacts
    distractors: list[dict] = field(default_factory=list)
    fps: int = FPS
    sample_rate: int = SAMPLE_RATE

    @property
    def frames(self) -> int:
        return self.video.shape[1]


def _rng(seed: int, index: int) -> np.random.Generator:
    if index < 0:
        raise ConfigError("index", index, "a non-negative sample index")
    return np.random.default_rng([seed & 0xFFFFFFFF, index & 0xFFFFFFFF, index >> 32])


def _coverage(shape: str, size: float, cx: float, cy: float, xs, ys) -> np.ndarray:
    """Anti-aliased coverage (1 px ramp) of a shape of area ``size**2`` centred at (cx, cy)."""
    dx, dy = xs - cx, ys - cy
    if shape == "square":
        inside = size / 2 - np.maximum(np.abs(dx), np.abs(dy))
    elif shape == "circle":
        inside = size / math.sqrt(math.pi) - np.sqrt(dx * dx + dy * dy)
    else:  # equilateral triangle pointing up, centred on its centroid
        inradius = size / math.sqrt(3 * math.sqrt(3))
        edge = np.maximum(dy, np.maximum(-0.866025 * dx - 0.5 * dy, 0.866025 * dx - 0.5 * dy))
        inside = inradius - edge
    return np.clip(inside + 0.5, 0.0, 1.0).astype(np.float32)


def _half_extent(shape: str, size: float) -> tuple[float, float]:
    """(half width, half height) of a shape's bounding box around its centre."""
    if shape == "square":
        return size / 2, size / 2
    if shape == "circle":
        r = size / math.sqrt(math.pi)
        return r, r
    inradius = size / math.sqrt(3 * math.sqrt(3))
    return inradius * math.sqrt(3), 2 * inradius  # centroid to top vertex is 2 inradii


def _trajectory(motion: str, frames: int, width: int, height: int, size: float, rng):
    """Per-frame centres (T, 2), scales (T,) and floor-contact frames of the main object."""
    unit = min(width, height)
    t = np.arange(frames, dtype=np.float64)
    steps = max(frames - 1, 1)
    scale = np.ones(frames)
    if motion == "growing":
        scale = np.exp(min(GROWTH, math.log(1.6) / steps) * t)
    elif motion == "shrinking":
        scale = np.exp(-min(GROWTH, math.log(1 / 0.6) / steps) * t)
    hw, hh = _half_extent_max(size * scale.max())
    margin = 0.02 * unit  # relative, so a sample is the same scene at every resolution
    lo_x, hi_x = hw + margin, width - hw - margin
    lo_y, hi_y = hh + margin, height - hh - margin
    contacts: list[int] = []
    if motion in ("left", "right", "up", "down"):
        horizontal = motion in ("left", "right")
        lo, hi = (lo_x, hi_x) if horizontal else (lo_y, hi_y)
        speed = min(SPEED * unit, (hi - lo) / steps)
        travel = speed * steps
        start = rng.uniform(lo, max(lo, hi - travel))  # speed * steps may pass hi by 1 ulp
        along = start + speed * t
        if motion in ("left", "up"):
            along = lo + hi - along
        across = rng.uniform(lo_y, hi_y) if horizontal else rng.uniform(lo_x, hi_x)
        xs, ys = (
            (along, np.full(frames, across)) if horizontal else (np.full(frames, across), along)
        )
    elif motion == "bouncing":
        floor = rng.uniform(lo_y + 0.6 * (hi_y - lo_y), hi_y)
        height_px = min(0.35 * unit, floor - lo_y)
        phase = rng.uniform(0, 1)
        arc = np.abs(np.sin(math.pi * (t / BOUNCE_PERIOD + phase)))
        ys = floor - height_px * arc
        xs = np.full(frames, rng.uniform(lo_x, hi_x))
        # floor contacts: where t / P + phase is a whole number
        first = math.ceil(phase) - phase
        contacts_t = np.arange(first * BOUNCE_PERIOD, frames - 1 + 1e-9, BOUNCE_PERIOD)
        contacts = [float(c) for c in contacts_t]
    else:
        xs = np.full(frames, rng.uniform(lo_x, hi_x))
        ys = np.full(frames, rng.uniform(lo_y, hi_y))
    return np.stack([xs, ys], 1), scale, contacts


def _half_extent_max(size: float) -> tuple[float, float]:
    # the largest box over the shapes, so the draw order of the RNG does not depend on shape
    boxes = [_half_extent(s, size) for s in SHAPES]
    return max(b[0] for b in boxes), max(b[1] for b in boxes)


def _sound(
    shape: str,
    heights: np.ndarray,
    sizes: np.ndarray,
    contacts: list[float],
    frames: int,
    cfg: WorldConfig,
    unit: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(waveform, pitch per frame, loudness per frame) of the main object's sound."""
    sr, fps = cfg.sample_rate, cfg.fps
    samples = frames * sr // fps
    pitch = LOW_HZ * (HIGH_HZ / LOW_HZ) ** np.clip(1 - heights, 0, 1)
    loud = 0.08 + 0.32 * np.clip((sizes / unit - 0.1) / 0.35, 0, 1)
    # frame t's values hold at time t / fps; linear in between, the last one held to the end
    times = np.arange(samples) / sr * fps
    f = np.interp(times, np.arange(frames), pitch)
    a = np.interp(times, np.arange(frames), loud)
    phase = 2 * math.pi * np.cumsum(f) / sr
    if shape == "circle":
        wave = np.sin(phase)
    else:
        power = 1 if shape == "square" else 2
        wave = sum(np.sin(n * phase) / n**power for n in (1, 3, 5, 7))
        wave = wave / np.max(np.abs(wave)) if np.max(np.abs(wave)) > 0 else wave
    out = a * wave
    click_len = int(0.012 * sr)
    envelope = np.exp(-np.arange(click_len) / (0.002 * sr))
    for c in contacts:
        start = int(round(c / fps * sr))
        piece = rng.uniform(-1, 1, click_len) * envelope * 0.6
        end = min(samples, start + click_len)
        out[start:end] += piece[: end - start]
    return np.clip(out, -1, 1).astype(np.float32), pitch, loud


def sample(
    index: int,
    frames: int = 17,
    height: int = 64,
    width: int = 64,
    config: WorldConfig | None = None,
) -> WorldSample:
    """Sample ``index`` of the world seeded ``config.seed``, drawn at frames x height x width."""
    cfg = config or WorldConfig()
    if frames < 1 or height < 8 or width < 8:
        raise ConfigError("format", (frames, height, width), "frames >= 1 and H, W >= 8 pixels")
    if cfg.min_size > cfg.max_size:
        raise ConfigError("data.min_size", cfg.min_size, f"<= max_size={cfg.max_size}")
    rng = _rng(cfg.seed, index)
    unit = min(height, width)
    color = str(rng.choice(cfg.colors))
    shape = str(rng.choice(cfg.shapes))
    motion = str(rng.choice(cfg.motions))
    background = str(rng.choice(cfg.backgrounds))
    size = rng.uniform(cfg.min_size, cfg.max_size) * unit
    if motion == "growing":  # leave room to grow
        size = size / 1.25
    n_distractors = int(rng.integers(0, cfg.max_distractors + 1))
    others = [c for c in cfg.colors if c != color]
    picked = rng.permutation(len(others))[:n_distractors] if others else []
    centers, scales, contacts = _trajectory(motion, frames, width, height, size, rng)
    sizes = size * scales

    ys = np.arange(height, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(width, dtype=np.float32)[None, :] + 0.5
    bg = np.asarray(BACKGROUNDS[background], np.float32)
    shade = (ys / height - 0.5) * 2 * cfg.shading  # (H, 1): lighter at the bottom
    canvas = np.broadcast_to(bg[:, None, None] + shade[None], (3, height, width)).copy()
    depth0 = np.ones((height, width), np.float32)
    distractors = []
    for k in picked:
        d_shape = str(rng.choice(SHAPES))
        d_size = rng.uniform(0.07, 0.10) * unit
        hw, hh = _half_extent(d_shape, d_size)
        cx, cy = rng.uniform(hw + 1, width - hw - 1), rng.uniform(hh + 1, height - hh - 1)
        d_depth = float(rng.uniform(0.85, 0.95))
        alpha = _coverage(d_shape, d_size, cx, cy, xs, ys)
        rgb = np.asarray(COLORS[others[k]], np.float32)[:, None, None]
        canvas = canvas * (1 - alpha) + rgb * alpha
        depth0 = np.where(alpha > 0.5, np.minimum(depth0, d_depth), depth0)
        distractors.append(
            {"color": others[k], "shape": d_shape, "center": (cx, cy), "size": d_size}
        )

    rgb = np.asarray(COLORS[color], np.float32)[:, None, None]
    video = np.empty((3, frames, height, width), np.float32)
    masks = np.empty((frames, height, width), np.float32)
    depth = np.empty((frames, height, width), np.float32)
    for t in range(frames):
        alpha = _coverage(shape, sizes[t], centers[t, 0], centers[t, 1], xs, ys)
        masks[t] = alpha
        video[:, t] = canvas * (1 - alpha) + rgb * alpha
        depth[t] = np.where(alpha > 0.5, 0.5 / scales[t], depth0)
    flow = np.zeros((max(frames - 1, 0), 2, height, width), np.float32)
    for t in range(frames - 1):
        ratio = scales[t + 1] / scales[t]
        inside = masks[t] > 0.5
        for axis, grid in ((0, xs), (1, ys)):
            move = centers[t + 1, axis] - centers[t, axis] + (grid - centers[t, axis]) * (ratio - 1)
            flow[t, axis] = np.where(inside, move, 0.0)

    audio, pitch, loud = _sound(
        shape, centers[:, 1] / height, sizes, contacts, frames, cfg, unit, rng
    )
    from videopoet.data.captions import caption as make_caption

    text = make_caption(rng, color, shape, motion, background, frames > 1, len(distractors))
    return WorldSample(
        index=index,
        video=torch.from_numpy(np.clip(video * 2 - 1, -1, 1)),
        audio=torch.from_numpy(audio)[None],
        caption=text,
        color=color,
        shape=shape,
        motion=motion,
        background=background,
        centers=torch.from_numpy(centers.astype(np.float32)),
        sizes=torch.from_numpy(sizes.astype(np.float32)),
        masks=torch.from_numpy(masks),
        depth=torch.from_numpy(depth),
        flow=torch.from_numpy(flow),
        pitch_hz=torch.from_numpy(pitch.astype(np.float32)),
        loudness=torch.from_numpy(loud.astype(np.float32)),
        bounce_times=[c / cfg.fps for c in contacts],
        distractors=distractors,
        fps=cfg.fps,
        sample_rate=cfg.sample_rate,
    )


def make_batch(
    indices: list[int], frames: int, height: int, width: int, config: WorldConfig | None = None
) -> torch.Tensor:
    """Clips of ``indices`` stacked: ``(B, 3, frames, height, width)``."""
    return torch.stack([sample(i, frames, height, width, config).video for i in indices])


def audio_batch(
    indices: list[int],
    seconds: float,
    config: WorldConfig | None = None,
    height: int = 32,
    width: int = 32,
) -> torch.Tensor:
    """Sound tracks of ``indices`` cut to ``seconds``: ``(B, 1, samples)``.

    The scene is laid out in units of the frame, so the sound depends on the aspect ratio
    only, not on the resolution: a small canvas makes it cheaply.
    """
    cfg = config or WorldConfig()
    frames = max(1, math.ceil(seconds * cfg.fps))
    samples = round(seconds * cfg.sample_rate)
    return torch.stack([sample(i, frames, height, width, cfg).audio[:, :samples] for i in indices])


def structure_clip(item: WorldSample, flow_scale: float | None = None) -> torch.Tensor:
    """Ground-truth structure as a ``(3, T, H, W)`` clip in ``[-1, 1]``: (flow x, flow y, depth).

    Flow is normalized by ``flow_scale`` pixels (default: 5 % of min(H, W)) and clipped; the
    flow of frame ``t`` is the motion from ``t`` to ``t + 1`` (the last frame repeats the one
    before, frame 0 of a 1-frame clip has none).
    """
    _, frames, height, width = item.video.shape
    scale = flow_scale or 0.05 * min(height, width)
    if frames > 1:
        flow = torch.cat([item.flow, item.flow[-1:]], 0)
    else:
        flow = torch.zeros(1, 2, height, width)
    flow = (flow / scale).clamp(-1, 1).permute(1, 0, 2, 3)
    depth = (item.depth * 2 - 1)[None]
    return torch.cat([flow, depth], 0)
