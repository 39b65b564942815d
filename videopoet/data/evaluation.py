"""Evaluate a bundle on the world's held-out split with the analyser (docs/evaluation.md).

For each task it can run, a bundle generates from ``N`` held-out world samples (indices
``EVAL_OFFSET + i``) and the :mod:`analyser <videopoet.data.analyser>` measures the output
against the sample's ground truth; the same is done, side by side, with an **untrained** LM of
the same config (seeded like ``Engine.create``, the same tokenizers and text encoder), so a
figure always comes with the value it has by chance.

- **Metric functions** (:func:`psnr`, :func:`caption_matches`, :func:`position_errors`,
  :func:`flow_epe`, :func:`pitch_height`) compare media with media or with ground truth; they
  are tested to give their perfect score on ground truth and a poor one on noise.
- **Probes** (:data:`PROBES`): per task, the inputs drawn from a world sample and the figure
  measured on the output. A figure that cannot be measured (no object found, no voiced sound,
  a height that never changes) is a miss: it is left out of means and counted in
  ``<task>_measured``; accuracies count a miss as wrong.
- :func:`evaluate` runs them and returns an :class:`Evaluation` (``to_json``, ``rows``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from videopoet.core.errors import ConfigError, VideoPoetError
from videopoet.data import analyser, world

#: PSNR of identical media (dB), so that every figure is a finite number
PSNR_CAP = 100.0
#: motions along which the object's height changes: pitch-height correlation is defined
VERTICAL = ("up", "down", "bouncing")
#: how far a2v / v2a look for vertically moving held-out clips, per seed asked for
SCAN_FACTOR = 64

#: every figure: key -> (task, what it measures); the JSON holds all of them (null if unmeasured)
FIGURES: dict[str, tuple[str, str]] = {
    "t2v_color_acc": ("t2v", "object colour = caption's (fraction of clips)"),
    "t2v_shape_acc": ("t2v", "object shape = caption's (fraction of clips)"),
    "t2v_direction_acc": ("t2v", "motion class = caption's (fraction of clips)"),
    "t2v_found": ("t2v", "clips with an object found"),
    "fp_position_error": ("fp", "object centre error after the condition (px)"),
    "fp_measured": ("fp", "clips with the object found after the condition"),
    "inpaint_psnr": ("inpaint", "PSNR inside the hidden box (dB)"),
    "outpaint_psnr": ("outpaint", "PSNR inside the hidden border (dB)"),
    "stylize_flow_epe": ("stylize", "DIS flow end-point error, output vs input (px)"),
    "a2v_corr": ("a2v", "object height vs input pitch (Pearson)"),
    "a2v_measured": ("a2v", "clips with a defined correlation"),
    "v2a_corr": ("v2a", "input height vs generated pitch (Pearson)"),
    "v2a_measured": ("v2a", "clips with a defined correlation"),
    "i2v_first_frame_psnr": ("i2v", "frame 0 vs the given image (dB)"),
    "t2i_color_acc": ("t2i", "object colour = caption's (fraction of images)"),
    "t2i_shape_acc": ("t2i", "object shape = caption's (fraction of images)"),
    "avcont_position_error": ("avcont", "object centre error after the given frames (px)"),
    "avcont_corr": ("avcont", "generated height vs generated pitch (Pearson)"),
    "avcont_measured": ("avcont", "clips with a defined correlation"),
    "uncond_fd": ("uncond", "Fréchet distance of analyser features to real clips (lower: better)"),
    "uncond_image_fd": (
        "uncond_image",
        "Fréchet distance of analyser features to real images (lower: better)",
    ),
    "visual_tokenizer_psnr": ("tokenizer", "encode/decode of the same clips (dB)"),
    "visual_tokenizer_color_acc": (
        "tokenizer",
        "t2v's colour accuracy on those decodes: its ceiling",
    ),
    "visual_tokenizer_shape_acc": (
        "tokenizer",
        "t2v's shape accuracy on those decodes: its ceiling",
    ),
    "visual_tokenizer_direction_acc": (
        "tokenizer",
        "t2v's motion accuracy on those decodes: its ceiling",
    ),
}
#: the tokenizer's figures: the same in both blocks (the untrained twin shares the tokenizer)
TOKENIZER_FIGURES = tuple(k for k, (task, _) in FIGURES.items() if task == "tokenizer")

#: figures of the bundle's super-resolution refiner, present only when it holds one: held-out
#: clips drawn at the refiner's output size, bicubic-downsampled to the bundle's format
SUPERRES_FIGURES: dict[str, tuple[str, str]] = {
    "superres_psnr": ("superres", "refined downsampled clip vs ground truth (dB)"),
    "bicubic_psnr": ("superres", "bicubic upsampling of the decoded downsampled clip (dB)"),
}


# ---------------------------------------------------------------------------- metrics


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _mean(values: Iterable[float]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(kept)) if kept else None


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """PSNR (dB) of two clips in ``[-1, 1]`` read as ``[0, 1]`` pixels, capped at
    :data:`PSNR_CAP`; ``mask`` (broadcast to the clips, True = counted) limits it to a region.
    NaN if the mask is empty."""
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    if a.shape != b.shape:
        raise ConfigError("video", tuple(a.shape), f"the reference's shape {tuple(b.shape)}")
    err = ((a - b) / 2) ** 2
    if mask is not None:
        mask = torch.broadcast_to(mask.bool().cpu(), err.shape)
        if not mask.any():
            return math.nan
        err = err[mask]
    mse = float(err.mean())
    return PSNR_CAP if mse <= 10 ** (-PSNR_CAP / 10) else 10 * math.log10(1 / mse)


def caption_matches(video: torch.Tensor, item: world.WorldSample) -> dict[str, float]:
    """1/0 per attribute: does the clip's object have the sample's colour, shape and motion
    (what its caption names); ``found`` 1 if an object was found at all (else all are 0)."""
    seen = analyser.analyse_video(video)
    return {
        "found": float(seen.found),
        "color": float(seen.color == item.color),
        "shape": float(seen.shape == item.shape),
        "direction": float(seen.motion == item.motion),
    }


def position_errors(video: torch.Tensor, item: world.WorldSample, start: int = 0) -> np.ndarray:
    """Per frame from ``start``: distance (px) of the clip's object centre to the sample's
    true centre, NaN where no object is found."""
    seen = analyser.analyse_video(video)
    truth = item.centers.numpy()[: seen.frames]
    error = np.linalg.norm(seen.centers - truth, axis=1)
    return error[start:]


def flow_epe(output: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean end-point error (px) between the DIS optical flows of two clips (3, T, H, W):
    0 when the output moves exactly like the reference."""
    from videopoet.plugins.structure import optical_flow

    if output.shape[1] < 2:
        return math.nan
    a = optical_flow(output.float().cpu())[:-1]  # the last frame repeats the one before
    b = optical_flow(reference.float().cpu())[:-1]
    return float(torch.linalg.vector_norm(a - b, dim=1).mean())


def pitch_height(video: torch.Tensor, audio: torch.Tensor, sample_rate: int) -> float:
    """Pearson correlation of the object's height and the sound's log-pitch (NaN if undefined)."""
    return analyser.pitch_height_correlation(video, audio, sample_rate=sample_rate)


# ---------------------------------------------------------------------------- probes


@dataclass
class Output:
    """What one generation gave: ``video`` (3, T, H, W) and/or ``audio`` (samples,)."""

    video: torch.Tensor | None
    audio: torch.Tensor | None
    sample_rate: int


class Probe:
    """How one task is evaluated: its inputs from a world sample, its figure on the output."""

    task: str = ""
    image: bool = False  #: measured on held-out images (the bundle's image format)

    def picks(self, item: world.WorldSample) -> bool:
        """Whether a held-out sample is used (by default every one)."""
        return True

    def inputs(self, item: world.WorldSample, n: int) -> dict[str, Any]:
        raise NotImplementedError

    def measure(self, out: Output, item: world.WorldSample, given: dict[str, Any]) -> dict:
        """Per-sample values (NaN where unmeasured)."""
        raise NotImplementedError

    def summarize(self, rows: list[dict]) -> dict[str, float | None]:
        raise NotImplementedError


class TextToVideo(Probe):
    task = "t2v"

    def inputs(self, item, n):
        return {"text": item.caption}

    def measure(self, out, item, given):
        return caption_matches(out.video, item)

    def summarize(self, rows):
        return {
            "t2v_color_acc": _mean(r["color"] for r in rows),
            "t2v_shape_acc": _mean(r["shape"] for r in rows),
            "t2v_direction_acc": _mean(r["direction"] for r in rows),
            "t2v_found": int(sum(r["found"] for r in rows)),
        }


class FramePrediction(Probe):
    task = "fp"
    condition_frames = 5

    def inputs(self, item, n):
        return {"video": item.video, "condition_frames": self.condition_frames}

    def measure(self, out, item, given):
        error = position_errors(out.video, item, self.condition_frames)
        found = np.isfinite(error)
        return {"error": float(error[found].mean()) if found.any() else math.nan}

    def summarize(self, rows):
        errors = [r["error"] for r in rows]
        return {
            "fp_position_error": _mean(errors),
            "fp_measured": int(sum(math.isfinite(e) for e in errors)),
        }


class Inpaint(Probe):
    """The centre box, half the height and half the width (a quarter of the frame)."""

    task = "inpaint"

    def mask(self, item) -> torch.Tensor:
        _, frames, height, width = item.video.shape
        mask = torch.zeros(frames, height, width, dtype=torch.bool)
        mask[:, height // 4 : height // 4 + height // 2, width // 4 : width // 4 + width // 2] = 1
        return mask

    def inputs(self, item, n):
        return {"video": item.video, "mask": self.mask(item)}

    def measure(self, out, item, given):
        return {"psnr": psnr(out.video, item.video, given["mask"][None])}

    def summarize(self, rows):
        return {f"{self.task}_psnr": _mean(r["psnr"] for r in rows)}


class Outpaint(Inpaint):
    """A quarter of the frame hidden at a border; the side changes from sample to sample."""

    task = "outpaint"
    directions = ("left", "right", "top", "bottom", "horizontal", "vertical")
    amount = 0.25

    def inputs(self, item, n):
        return {"video": item.video, "direction": self.directions[n % 6], "amount": self.amount}

    def measure(self, out, item, given):
        from videopoet.tasks.masks import border_mask

        _, frames, height, width = item.video.shape
        mask = border_mask(frames, height, width, given["direction"], given["amount"])
        return {"psnr": psnr(out.video, item.video, mask[None])}


class Stylize(Probe):
    """Text and the clip (its structure is computed by the task); no first frame."""

    task = "stylize"

    def inputs(self, item, n):
        return {"text": item.caption, "video": item.video}

    def measure(self, out, item, given):
        return {"epe": flow_epe(out.video, item.video)}

    def summarize(self, rows):
        return {"stylize_flow_epe": _mean(r["epe"] for r in rows)}


class AudioToVideo(Probe):
    """Held-out clips whose object moves vertically (elsewhere the height is constant and the
    correlation undefined)."""

    task = "a2v"

    def picks(self, item):
        return item.motion in VERTICAL

    def inputs(self, item, n):
        return {"audio": item.audio}

    def measure(self, out, item, given):
        return {"corr": pitch_height(out.video, item.audio, item.sample_rate)}

    def summarize(self, rows):
        values = [r["corr"] for r in rows]
        return {
            f"{self.task}_corr": _mean(values),
            f"{self.task}_measured": int(sum(math.isfinite(v) for v in values)),
        }


class VideoToAudio(AudioToVideo):
    task = "v2a"

    def inputs(self, item, n):
        return {"video": item.video}

    def measure(self, out, item, given):
        return {"corr": pitch_height(item.video, out.audio, out.sample_rate)}


class ImageToVideo(Probe):
    task = "i2v"

    def inputs(self, item, n):
        return {"image": item.video[:, :1]}

    def measure(self, out, item, given):
        return {"psnr": psnr(out.video[:, :1], item.video[:, :1])}

    def summarize(self, rows):
        return {"i2v_first_frame_psnr": _mean(r["psnr"] for r in rows)}


class TextToImage(TextToVideo):
    """A held-out image's caption (it names no motion): colour and shape only."""

    task = "t2i"
    image = True

    def summarize(self, rows):
        return {
            "t2i_color_acc": _mean(r["color"] for r in rows),
            "t2i_shape_acc": _mean(r["shape"] for r in rows),
        }


class AudioVideoContinuation(Probe):
    """The first frames of a held-out clip whose object moves vertically, and their sound: the
    continued object's centre against the truth, and the continued pair's own height-pitch
    correlation (does the generated sound follow the generated motion)."""

    task = "avcont"
    condition_frames = 5

    def picks(self, item):
        return item.motion in VERTICAL

    def inputs(self, item, n):
        return {"video": item.video, "audio": item.audio.reshape(-1)}

    def measure(self, out, item, given):
        error = position_errors(out.video, item, self.condition_frames)
        found = np.isfinite(error)
        return {
            "error": float(error[found].mean()) if found.any() else math.nan,
            "corr": pitch_height(out.video, out.audio, out.sample_rate),
        }

    def summarize(self, rows):
        corr = [r["corr"] for r in rows]
        return {
            "avcont_position_error": _mean(r["error"] for r in rows),
            "avcont_corr": _mean(corr),
            "avcont_measured": int(sum(math.isfinite(v) for v in corr)),
        }


class Unconditional(Probe):
    """No input: no sample to compare one output with, so the figure is about the set, the
    Fréchet distance of the analyser's features (colour, shape, position, size, motion, pixel
    statistics; :class:`videopoet.data.frechet.AnalyserFeatures`) of the generated clips to
    those of as many real held-out clips. A model that draws the world scores near the floor
    of two real sets of that size (``videopoet evaluate --fvd`` prints it for t2v)."""

    task = "uncond"

    def inputs(self, item, n):
        return {}

    def measure(self, out, item, given):
        from videopoet.data.frechet import AnalyserFeatures

        features = AnalyserFeatures()
        return {
            "features": features.features(out.video).tolist(),
            "real": features.features(item.video).tolist(),
        }

    def summarize(self, rows):
        from videopoet.data.frechet import FeatureStats, frechet_distance

        if len(rows) < 2:  # a covariance needs two
            return {f"{self.task}_fd": None}
        real = FeatureStats.of(np.array([r["real"] for r in rows]))
        made = FeatureStats.of(np.array([r["features"] for r in rows]))
        return {f"{self.task}_fd": _finite_or_none(frechet_distance(real, made))}


class UnconditionalImage(Unconditional):
    task = "uncond_image"
    image = True


#: the evaluated tasks, in the order they run
PROBES: dict[str, Probe] = {
    p.task: p
    for p in (
        TextToVideo(),
        FramePrediction(),
        Inpaint(),
        Outpaint(),
        Stylize(),
        AudioToVideo(),
        VideoToAudio(),
        ImageToVideo(),
        TextToImage(),
        AudioVideoContinuation(),
        Unconditional(),
        UnconditionalImage(),
    )
}


# ---------------------------------------------------------------------------- running


@dataclass
class Evaluation:
    """Figures of a bundle and of its untrained twin on the same held-out samples."""

    format: str
    seeds: int
    tasks: list[str]
    figures: dict[str, float | int | None]
    untrained: dict[str, float | int | None] | None
    skipped: dict[str, str] = field(default_factory=dict)
    #: task -> the settings both models sampled it with (cfg_scale, temperature, top_k, top_p)
    sampling: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    rows: dict[str, dict[str, list[dict]]] = field(default_factory=dict)  # model -> task -> rows
    first: int = 0  #: held-out samples from index EVAL_OFFSET + first

    def to_json(self, bundle: str = "") -> dict[str, Any]:
        return {
            "bundle": bundle,
            "format": self.format,
            "seeds": self.seeds,
            "first": self.first,
            "tasks": self.tasks,
            **self.figures,
            "untrained": self.untrained,
            "skipped": self.skipped,
            "sampling": self.sampling,
            "timings_s": {k: round(v, 2) for k, v in self.timings.items()},
        }

    def table(self) -> list[tuple[str, str, str, str]]:
        """(task, figure, bundle, untrained) rows of the evaluated figures, as text."""

        def shown(value: Any) -> str:
            if value is None:
                return "-"
            return str(value) if isinstance(value, int) else f"{value:.3f}"

        done = set(self.tasks) | {"tokenizer"}
        other = self.untrained or {}
        rows = [
            (task, key, shown(self.figures.get(key)), shown(other.get(key)))
            for key, (task, _) in FIGURES.items()
            if task in done
        ]
        return rows + [
            (task, key, shown(self.figures[key]), "-")
            for key, (task, _) in SUPERRES_FIGURES.items()
            if key in self.figures
        ]


def video_format(engine: Any, format: str | None = None) -> Any:
    """The bundle's first video format, or ``format`` when it is one of the bundle's."""
    from videopoet.core.declarations import parse_format

    videos = [f for f in engine.formats if not f.is_image]
    shown = ", ".join(str(f) for f in engine.formats)
    if format is None:
        if not videos:
            raise ConfigError("format", None, f"a video format; the bundle serves {shown}")
        return videos[0]
    fmt = parse_format(format)
    if fmt not in videos:
        raise ConfigError("format", format, f"one of the bundle's video formats: {shown}")
    return fmt


def image_format(engine: Any, video: Any) -> Any:
    """The bundle's image format of ``video``'s size, else its first image format (None if
    it serves no image)."""
    images = [f for f in engine.formats if f.is_image]
    same = [f for f in images if (f.height, f.width) == (video.height, video.width)]
    return (same or images or [None])[0]


def untrained_engine(engine: Any, init_seed: int = 0) -> Any:
    """The same bundle with a freshly initialised LM: same config, vocabulary, tokenizers and
    text encoder, weights drawn as ``Engine.create(seed=init_seed)`` draws them."""
    from videopoet.core.engine import Engine

    lm = engine.lm
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        fresh = type(lm)(lm.config)
    parameter = next(lm.parameters())
    fresh = fresh.to(device=parameter.device, dtype=parameter.dtype).eval()
    fresh.vocab = lm.vocab
    return Engine(
        fresh,
        visual=(engine.visual, engine.visual_spec) if engine.visual is not None else None,
        audio=(engine.audio, engine.audio_spec) if engine.audio is not None else None,
        text_encoder=engine.text_encoder,
        text_record=engine.text_record,
        formats=engine.formats,
        registry=engine.registry,
        generation=engine.generation,  # it samples as the trained bundle does
        commit_fill=engine.commit_fill,
    )


def task_sampling(engine: Any, task: str, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """The settings ``task`` is sampled with in an evaluation: ``given`` (None values left
    out) over the bundle's defaults for it. A ``cfg_scale`` given for every task applies to
    those with a condition to drop; the others use 1."""
    given = {k: v for k, v in (given or {}).items() if v is not None}
    if not engine.registry.task(task).cfg_drop:
        given.pop("cfg_scale", None)
    return engine.sampling_for(task, **given)


def held_out(
    probe: Probe,
    seeds: int,
    fmt: Any,
    config: world.WorldConfig | None,
    cache: dict,
    first: int = 0,
) -> list[tuple[int, world.WorldSample]]:
    """The first ``seeds`` held-out samples ``(i, sample)`` the probe picks from index
    ``EVAL_OFFSET + first`` on (sample ``i`` is index ``EVAL_OFFSET + i``); fewer if the scan
    finds fewer."""
    picked: list[tuple[int, world.WorldSample]] = []
    for i in range(first, first + seeds * SCAN_FACTOR):
        if len(picked) == seeds:
            break
        if i not in cache:
            cache[i] = world.sample(
                world.EVAL_OFFSET + i, fmt.frames, fmt.height, fmt.width, config
            )
        if probe.picks(cache[i]):
            picked.append((i, cache[i]))
    return picked


def tokenizer_figures(
    engine: Any, items: list[world.WorldSample], fmt: Any
) -> dict[str, float | None]:
    """:data:`TOKENIZER_FIGURES` of the visual tokenizer's encode/decode of the clips: the mean
    PSNR, and the t2v accuracies (colour, shape, motion) the analyser reads on the decodes.
    Every generated clip passes through the decoder, so these are what a perfect LM would
    score: a motion the decoder does not render (say, an object that fades as it moves) caps
    ``t2v_direction_acc`` however well the LM follows its caption."""
    out: dict[str, float | None] = dict.fromkeys(TOKENIZER_FIGURES)
    if engine.visual is None or not items:
        return out
    shape = engine.visual_spec.latent_shape(fmt.frames, fmt.height, fmt.width)
    values, matches = [], []
    for item in items:
        decoded = engine.decode_video(engine.encode_video(item.video), shape)[0].clamp(-1, 1)
        values.append(psnr(decoded, item.video))
        matches.append(caption_matches(decoded, item))
    out["visual_tokenizer_psnr"] = _finite_or_none(_mean(values))
    for name in ("color", "shape", "direction"):
        out[f"visual_tokenizer_{name}_acc"] = _mean(m[name] for m in matches)
    return out


def superres_figures(
    engine: Any,
    seeds: int,
    fmt: Any,
    config: world.WorldConfig | None = None,
    bar: Any = None,
    first: int = 0,
) -> dict[str, float | None]:
    """:data:`SUPERRES_FIGURES` of the bundle's ``superres`` refiner on ``seeds`` held-out
    clips: each drawn at ``fmt`` times the refiner's scale, bicubic-downsampled to ``fmt``
    (how its training inputs are made), refined with its caption and seed ``n``; beside it,
    the same downsampled clip encoded, decoded and bicubic-upsampled."""
    from videopoet.plugins.superres.refiner import resize

    scale = engine.refiners["superres"].scale
    shape = engine.visual_spec.latent_shape(fmt.frames, fmt.height, fmt.width)
    refined, bicubic = [], []
    for n in range(seeds):
        item = world.sample(
            world.EVAL_OFFSET + first + n,
            fmt.frames,
            fmt.height * scale,
            fmt.width * scale,
            config,
        )
        truth = item.video[None]
        low = resize(truth, 1 / scale)
        out = engine.refine("superres", low, text=item.caption, seed=n)
        refined.append(psnr(out, truth))
        decoded = engine.decode_video(engine.encode_video(low[0]), shape).clamp(-1, 1)
        bicubic.append(psnr(resize(decoded, scale), truth))
        if bar is not None:
            bar.update(1)
    return {"superres_psnr": _mean(refined), "bicubic_psnr": _mean(bicubic)}


def evaluate(
    engine: Any,
    *,
    seeds: int = 8,
    tasks: list[str] | None = None,
    format: str | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    cfg_scale: float | None = None,
    untrained: bool = True,
    init_seed: int = 0,
    world_config: world.WorldConfig | None = None,
    progress: bool = True,
    first: int = 0,
    superres: bool = True,
) -> Evaluation:
    """Figures of ``engine`` (and of its untrained twin) on ``seeds`` held-out samples per task.

    ``first``: where the held-out samples start (index ``EVAL_OFFSET + first``); choose
    sampling settings on another range than the one reported (say ``first=1000``), so the
    reported figures are not tuned on their own samples.

    ``tasks``: names from :data:`PROBES` (default all); a task the bundle cannot run, or that
    fails with a user-facing error (say, a layout longer than the LM's context), is listed in
    ``skipped`` with the reason and its figures are null. Generation ``n`` of a task uses
    sampling seed ``n`` for both models.

    Sampling: each option given (not None) over the bundle's defaults for the task
    (:func:`task_sampling`), the same settings for both models; ``sampling`` in the result
    holds them per task.

    ``superres``: with a ``superres`` refiner in the bundle, also :data:`SUPERRES_FIGURES`
    (the slowest part on a CPU: False leaves them out, e.g. while tuning a task's sampling).
    """
    from tqdm.auto import tqdm

    if seeds < 1:
        raise ConfigError("seeds", seeds, "at least 1")
    if first < 0:
        raise ConfigError("first", first, "a held-out index >= 0")
    wanted = list(PROBES) if tasks is None else list(dict.fromkeys(tasks))
    unknown = [t for t in wanted if t not in PROBES]
    if unknown:
        raise ConfigError("tasks", ",".join(unknown), f"tasks among {', '.join(PROBES)}")
    fmt = video_format(engine, format)
    image_fmt = image_format(engine, fmt)
    servable = set(engine.tasks())
    skipped = {t: "the bundle cannot run it" for t in wanted if t not in servable}
    for task in wanted:
        if PROBES[task].image and image_fmt is None and task not in skipped:
            skipped[task] = "the bundle serves no image format"
    runnable = [t for t in wanted if t not in skipped]
    formats = {t: image_fmt if PROBES[t].image else fmt for t in runnable}
    caches: dict[Any, dict[int, world.WorldSample]] = {f: {} for f in {fmt, *formats.values()}}
    cache = caches[fmt]
    plans = {
        t: held_out(PROBES[t], seeds, formats[t], world_config, caches[formats[t]], first)
        for t in runnable
    }
    for task, plan in plans.items():
        if not plan:
            skipped[task] = "no held-out sample it can be measured on"
    models = [("bundle", engine)]
    if untrained:
        models.append(("untrained", untrained_engine(engine, init_seed)))
    given = {"cfg_scale": cfg_scale, "temperature": temperature, "top_k": top_k, "top_p": top_p}
    sampling = {t: task_sampling(engine, t, given) for t in runnable}
    total = sum(len(p) for p in plans.values()) * len(models) + seeds
    superres = superres and "superres" in engine.refiners
    total += seeds if superres else 0
    timings: dict[str, float] = {}
    rows: dict[str, dict[str, list[dict]]] = {name: {} for name, _ in models}
    with tqdm(total=total, desc="evaluate", unit="clip", disable=not progress) as bar:
        for name, model in models:
            for task in runnable:
                if task in skipped or not plans[task]:
                    continue
                probe, began = PROBES[task], time.perf_counter()
                bar.set_postfix_str(f"{name} {task}")
                try:
                    rows[name][task] = run_probe(
                        model, probe, plans[task], formats[task], given, sampling[task], bar
                    )
                except VideoPoetError as exc:
                    skipped[task] = f"{type(exc).__name__}: {exc}"
                    for other in rows.values():
                        other.pop(task, None)
                timings[f"{name}/{task}"] = time.perf_counter() - began
        began = time.perf_counter()
        bar.set_postfix_str("visual tokenizer")
        items = [item for _, item in held_out(Probe(), seeds, fmt, world_config, cache, first)]
        tokenizer = tokenizer_figures(engine, items, fmt)
        bar.update(seeds)
        timings["visual_tokenizer"] = time.perf_counter() - began
        refined: dict[str, float | None] = {}
        if superres:
            began = time.perf_counter()
            bar.set_postfix_str("superres")
            refined = superres_figures(engine, seeds, fmt, world_config, bar, first)
            timings["superres"] = time.perf_counter() - began

    def figures(model: str) -> dict[str, float | int | None]:
        out: dict[str, float | int | None] = {key: None for key in FIGURES}
        for task, task_rows in rows[model].items():
            if task not in skipped:
                out.update(PROBES[task].summarize(task_rows))
        out.update(tokenizer)
        return out

    return Evaluation(
        format=str(fmt),
        seeds=seeds,
        tasks=[t for t in runnable if t not in skipped],
        figures={**figures("bundle"), **refined},
        untrained=figures("untrained") if untrained else None,
        skipped=skipped,
        sampling={t: s for t, s in sampling.items() if t not in skipped},
        timings=timings,
        rows=rows,
        first=first,
    )


def run_probe(
    engine: Any,
    probe: Probe,
    plan: list[tuple[int, world.WorldSample]],
    fmt: Any,
    given: dict[str, Any],
    used: dict[str, Any],
    bar: Any = None,
) -> list[dict]:
    """Rows of ``probe`` measured on ``engine``'s generations for ``plan``. ``given``: the
    sampling options the caller gave (None: the bundle's); ``used`` is updated with what
    ``generate`` sampled with; ``bar`` (optional) advances by one per generation."""
    options = {k: v for k, v in given.items() if v is not None}
    out_rows = []
    for n, (i, item) in enumerate(plan):
        inputs = probe.inputs(item, n)
        call = dict(options)
        if call.get("cfg_scale", 1.0) != 1.0 and not engine.can_guide(probe.task, fmt, **inputs):
            del call["cfg_scale"]  # a given guidance applies where it can (no prompt: not here)
        result = engine.generate(probe.task, format=fmt, seed=n, **call, **inputs)
        used.update(result.sampling)
        sample_rate = getattr(result, "sample_rate", world.SAMPLE_RATE)
        output = Output(
            None if result.video is None else result.video[0],
            None if result.audio is None else result.audio[0],
            sample_rate,
        )
        row = probe.measure(output, item, inputs)
        out_rows.append({"index": world.EVAL_OFFSET + i, **row})
        if bar is not None:
            bar.update(1)
    return out_rows
