"""What `videopoet demo` shows: one *case* per task of the paper, super-resolution and chains.

A case draws its inputs from a held-out sample of the built-in world, generates with a model
and measures the output with the world's analyser (the figures of
:mod:`videopoet.data.evaluation` where one exists). The runner calls the same case with the
bundle and with its untrained twin, so every figure comes with the value it has by chance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from videopoet.core.errors import ConfigError
from videopoet.data import analyser, world
from videopoet.data import evaluation as ev
from videopoet.demo import views

#: frames a case gives frame prediction and audio-video continuation (the paper's 1 + 4)
CONDITION_FRAMES = 5


@dataclass
class Medium:
    """One thing the gallery shows: ``kind`` video (with ``audio`` muxed if given), image,
    audio or text. Clips are (3, T, H, W) in [-1, 1]; an image is (3, 1, H, W) or (3, H, W)."""

    kind: str
    label: str
    video: torch.Tensor | None = None
    audio: torch.Tensor | None = None
    text: str | None = None


@dataclass
class Outcome:
    """One generation of a case by one model: what it made and the values measured on it."""

    outputs: list[Medium]
    values: dict[str, float]
    inputs: list[Medium] | None = None  # what was given, when the case makes it in run()


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    better: str = "higher"  # or "lower"


@dataclass
class Context:
    """What every case needs: the bundle's video (and image) format, the world's sampling
    rate, and the sampling options given (``temperature``, ``top_k``, ...; the bundle's
    defaults fill in the others)."""

    fmt: Any
    image_fmt: Any
    world: world.WorldConfig
    sampling: dict[str, Any] = field(default_factory=dict)

    @property
    def sample_rate(self) -> int:
        return self.world.sample_rate

    def options(self, engine: Any, task: str) -> dict[str, Any]:
        """The sampling options given, for ``task``: a ``cfg_scale`` given for the whole demo
        applies to the tasks with a condition to drop (the others use 1)."""
        given = {k: v for k, v in self.sampling.items() if v is not None}
        if not engine.registry.task(task).cfg_drop:
            given.pop("cfg_scale", None)
        return given


Preview = Callable[[torch.Tensor, int], None] | None


def _generate(engine: Any, task: str, seed: int, ctx: Context, preview: Preview, **inputs: Any):
    fmt = ctx.image_fmt if engine.registry.task(task).target.visual == "image" else ctx.fmt
    options = ctx.options(engine, task)
    if options.get("cfg_scale", 1.0) != 1.0 and not engine.can_guide(task, fmt, **inputs):
        options.pop("cfg_scale")  # e.g. inpainting without a prompt: nothing to drop
    return engine.generate(task, format=fmt, seed=seed, preview=preview, **options, **inputs)


def _sound(item: world.WorldSample) -> torch.Tensor:
    return item.audio.reshape(-1)


def _clip(item: world.WorldSample, label: str = "input clip (with its sound)") -> Medium:
    return Medium("video", label, item.video, _sound(item))


def _restyle(item: world.WorldSample) -> tuple[str, str, torch.Tensor]:
    """A new colour for the main object (not its own, nor a distractor's), a caption of the
    grammar naming it, and the clip recoloured exactly (the ground truth of that prompt)."""
    from videopoet.data.captions import caption

    taken = {item.color, *(d["color"] for d in item.distractors)}
    choices = [c for c in world.COLORS if c not in taken]
    color = choices[item.index % len(choices)]
    rng = np.random.default_rng(item.index)
    text = caption(rng, color, item.shape, item.motion, item.background, item.video.shape[1] > 1)
    recolored = views.recolor(item.video, item.masks, world.COLORS[item.color], world.COLORS[color])
    return color, text, recolored


def _position_error_after(video: torch.Tensor, item: world.WorldSample, start: int) -> float:
    error = ev.position_errors(video, item, start)
    found = np.isfinite(error)
    return float(error[found].mean()) if found.any() else math.nan


class Case:
    """Base class: set the attributes, override ``inputs`` and ``run``."""

    key = ""
    title = ""
    about = ""
    tasks: tuple[str, ...] = ()
    figures: tuple[Figure, ...] = ()
    image = False  # draws 1-frame world samples
    reference = "untrained LM"  # what the third column shows
    preview = True  # the shown run records the progressive preview

    def describe(self) -> str:
        """The line the gallery shows under the case's title."""
        return self.about

    def unavailable(self, engine: Any) -> str | None:
        """Why the bundle cannot run this case (None if it can)."""
        servable = set(engine.tasks())
        missing = [t for t in self.tasks if t not in servable]
        if missing:
            return f"the bundle cannot run {', '.join(missing)}"
        return None

    def picks(self, item: world.WorldSample) -> bool:
        return True

    def inputs(self, item: world.WorldSample, ctx: Context) -> list[Medium]:
        raise NotImplementedError

    def run(
        self, engine: Any, item: world.WorldSample, seed: int, ctx: Context, preview: Preview
    ) -> Outcome:
        raise NotImplementedError

    def run_reference(
        self, engine: Any, item: world.WorldSample, seed: int, ctx: Context
    ) -> Outcome:
        """The third column: by default the same case with the untrained LM."""
        return self.run(engine, item, seed, ctx, None)


class TextToVideo(Case):
    key, title, tasks = "t2v", "Text-to-video", ("t2v",)
    about = "A caption of a held-out world clip; the clip itself is never shown to the model."
    figures = (
        Figure("color", "object colour = the prompt's"),
        Figure("shape", "object shape = the prompt's"),
        Figure("motion", "motion = the prompt's"),
    )

    def inputs(self, item, ctx):
        return [Medium("text", "prompt", text=item.caption)]

    def run(self, engine, item, seed, ctx, preview):
        video = _generate(engine, "t2v", seed, ctx, preview, text=item.caption).video[0]
        match = ev.caption_matches(video, item)
        values = {"color": match["color"], "shape": match["shape"], "motion": match["direction"]}
        return Outcome([Medium("video", "generated", video)], values)


class TextToImage(Case):
    key, title, tasks, image = "t2i", "Text-to-image", ("t2i",), True
    about = "A caption of a held-out world image (no motion named)."
    figures = (
        Figure("color", "object colour = the prompt's"),
        Figure("shape", "object shape = the prompt's"),
    )
    preview = False

    def inputs(self, item, ctx):
        return [Medium("text", "prompt", text=item.caption)]

    def run(self, engine, item, seed, ctx, preview):
        video = _generate(engine, "t2i", seed, ctx, None, text=item.caption).video[0]
        match = ev.caption_matches(video, item)
        return Outcome(
            [Medium("image", "generated", video)],
            {"color": match["color"], "shape": match["shape"]},
        )


class ImageToVideo(Case):
    key, title, tasks = "i2v", "Image-to-video", ("i2v",)
    about = "The first frame of a held-out clip and its caption: the model animates the image."
    figures = (
        Figure("first_frame_psnr", "frame 0 vs the given image (dB)"),
        Figure("motion", "motion = the caption's"),
    )

    def inputs(self, item, ctx):
        return [
            Medium("image", "given image", item.video[:, :1]),
            Medium("text", "prompt", text=item.caption),
        ]

    def run(self, engine, item, seed, ctx, preview):
        image = item.video[:, :1]
        video = _generate(engine, "i2v", seed, ctx, preview, image=image, text=item.caption)
        video = video.video[0]
        values = {
            "first_frame_psnr": ev.psnr(video[:, :1], image),
            "motion": ev.caption_matches(video, item)["direction"],
        }
        return Outcome([Medium("video", "generated", video)], values)


class FramePrediction(Case):
    key, title, tasks = "fp", "Frame prediction", ("fp",)
    about = f"The first {CONDITION_FRAMES} frames of a held-out clip; the model continues it."
    figures = (
        Figure(
            "position_error", "object centre vs the true one after the given frames (px)", "lower"
        ),
    )

    def inputs(self, item, ctx):
        strip = views.frame_strip(item.video, CONDITION_FRAMES)
        return [
            Medium("image", f"the {CONDITION_FRAMES} given frames", strip),
            _clip(item, "the real clip (not given)"),
        ]

    def run(self, engine, item, seed, ctx, preview):
        result = _generate(
            engine, "fp", seed, ctx, preview, video=item.video, condition_frames=CONDITION_FRAMES
        )
        video = result.video[0]
        values = {"position_error": _position_error_after(video, item, CONDITION_FRAMES)}
        return Outcome([Medium("video", "generated", video)], values)


class LongVideo(Case):
    key, title, tasks = "long", "Long video by repeated frame prediction", ("fp",)
    times = 3
    about = (
        f"A held-out clip extended {times} times: each round conditions on the last "
        f"{CONDITION_FRAMES} frames and keeps what follows them (paper 7.2)."
    )
    figures = (
        Figure("found", "new frames with an object found"),
        Figure("color_kept", "new frames whose object keeps the clip's colour"),
    )
    preview = False

    def inputs(self, item, ctx):
        return [_clip(item)]

    def run(self, engine, item, seed, ctx, preview):
        options = ctx.options(engine, "fp")
        video = engine.extend(item.video, self.times, format=ctx.fmt, seed=seed, **options)
        seen = analyser.analyse_video(video)
        start = item.video.shape[1]
        kept = [c == item.color for c in seen.colors[start:]]
        values = {"found": float(seen.present[start:].mean()), "color_kept": float(np.mean(kept))}
        return Outcome([Medium("video", f"{video.shape[1]} frames", video)], values)


class Inpaint(Case):
    key, title, tasks = "inpaint", "Inpainting", ("inpaint",)
    about = "A held-out clip with its centre box hidden (grey); the model fills it in."
    figures = (Figure("psnr", "PSNR inside the hidden box (dB)"),)

    def mask(self, item):
        return ev.PROBES["inpaint"].mask(item)

    def inputs(self, item, ctx):
        shown = views.masked_view(item.video, self.mask(item))
        return [Medium("video", "masked input", shown), _clip(item, "the real clip")]

    def run(self, engine, item, seed, ctx, preview):
        mask = self.mask(item)
        video = _generate(engine, self.key, seed, ctx, preview, video=item.video, mask=mask)
        video = video.video[0]
        values = {"psnr": ev.psnr(video, item.video, mask[None])}
        return Outcome([Medium("video", "generated", video)], values)


class Outpaint(Inpaint):
    key, title, tasks = "outpaint", "Outpainting", ("outpaint",)
    about = "A held-out clip with a quarter of the frame hidden at a border; the model extends it."
    figures = (Figure("psnr", "PSNR inside the hidden border (dB)"),)
    amount = 0.25

    def direction(self, item) -> str:
        from videopoet.tasks.outpaint import DIRECTIONS

        return DIRECTIONS[item.index % len(DIRECTIONS)]

    def mask(self, item):
        from videopoet.tasks.masks import border_mask

        _, frames, height, width = item.video.shape
        return border_mask(frames, height, width, self.direction(item), self.amount)

    def run(self, engine, item, seed, ctx, preview):
        given = {"direction": self.direction(item), "amount": self.amount}
        video = _generate(engine, "outpaint", seed, ctx, preview, video=item.video, **given)
        video = video.video[0]
        return Outcome(
            [Medium("video", "generated", video)],
            {"psnr": ev.psnr(video, item.video, self.mask(item)[None])},
        )


class Stylize(Case):
    """Restyling: the prompt names a new colour for the object; with ``first_frame`` the
    recoloured first frame is given too. The recoloured clip is the exact ground truth."""

    key, title, tasks = "stylize", "Stylization", ("stylize",)
    about = (
        "A held-out clip's structure (optical flow and depth, computed from it) and a prompt "
        "that gives its object a new colour; no first frame."
    )
    first_frame = False
    figures = (
        Figure("color", "object colour = the new prompt's"),
        Figure("flow_epe", "optical flow vs the input's, end-point error (px)", "lower"),
        Figure("psnr", "PSNR vs the exactly recoloured clip (dB)"),
    )

    def inputs(self, item, ctx):
        from videopoet.plugins.structure import structure_clip

        _, text, recolored = _restyle(item)
        shown = [
            _clip(item),
            Medium(
                "video",
                "structure: flow x, flow y, depth",
                views.structure_view(structure_clip(item.video).video),
            ),
            Medium("text", "prompt", text=text),
        ]
        if self.first_frame:
            shown.insert(2, Medium("image", "recoloured first frame", recolored[:, :1]))
        return shown

    def run(self, engine, item, seed, ctx, preview):
        color, text, recolored = _restyle(item)
        given = {"image": recolored[:, :1]} if self.first_frame else {}
        video = _generate(
            engine, "stylize", seed, ctx, preview, text=text, video=item.video, **given
        )
        video = video.video[0]
        values = {
            "color": float(analyser.analyse_video(video).color == color),
            "flow_epe": ev.flow_epe(video, item.video),
            "psnr": ev.psnr(video, recolored),
        }
        return Outcome([Medium("video", "generated", video)], values)


class StylizeFirstFrame(Stylize):
    key, title = "stylize_first_frame", "Stylization with its first frame"
    about = (
        "As above, and the recoloured first frame is given as well (the optional input of "
        "the stylize task)."
    )
    first_frame = True


class AudioToVideo(Case):
    key, title, tasks = "a2v", "Audio-to-video", ("a2v",)
    about = (
        "The sound of a held-out clip whose object moves vertically: in the world, pitch "
        "follows height. The generated clip is played with that sound."
    )
    figures = (Figure("corr", "object height vs the sound's pitch (Pearson)"),)

    def picks(self, item):
        return item.motion in ev.VERTICAL

    def inputs(self, item, ctx):
        return [Medium("audio", "input sound", audio=_sound(item))]

    def run(self, engine, item, seed, ctx, preview):
        video = _generate(engine, "a2v", seed, ctx, preview, audio=_sound(item)).video[0]
        values = {"corr": ev.pitch_height(video, _sound(item), item.sample_rate)}
        return Outcome(
            [Medium("video", "generated, with the input sound", video, _sound(item))], values
        )


class VideoToAudio(AudioToVideo):
    key, title, tasks = "v2a", "Video-to-audio", ("v2a",)
    about = "A held-out clip without its sound; the model makes the sound (played with the clip)."
    figures = (Figure("corr", "the clip's object height vs the generated pitch (Pearson)"),)
    preview = False

    def inputs(self, item, ctx):
        return [
            Medium("video", "input clip (silent)", item.video),
            Medium("audio", "its real sound (not given)", audio=_sound(item)),
        ]

    def run(self, engine, item, seed, ctx, preview):
        result = _generate(engine, "v2a", seed, ctx, None, video=item.video)
        audio = result.audio[0]
        values = {"corr": ev.pitch_height(item.video, audio, result.sample_rate)}
        return Outcome(
            [Medium("video", "the clip with the generated sound", item.video, audio)], values
        )


class AudioVideoContinuation(AudioToVideo):
    key, title, tasks = "avcont", "Audio-video continuation", ("avcont",)
    about = (
        f"The first {CONDITION_FRAMES} frames of a held-out clip and their sound; the model "
        "continues both."
    )
    figures = (
        Figure(
            "position_error", "object centre vs the true one after the given frames (px)", "lower"
        ),
        Figure("corr", "generated object height vs generated pitch (Pearson)"),
    )

    def inputs(self, item, ctx):
        cut = round(CONDITION_FRAMES / world.FPS * item.sample_rate)
        return [
            Medium(
                "video",
                f"the {CONDITION_FRAMES} given frames and their sound",
                item.video[:, :CONDITION_FRAMES],
                _sound(item)[:cut],
            ),
            _clip(item, "the real clip (not given)"),
        ]

    def run(self, engine, item, seed, ctx, preview):
        result = _generate(
            engine, "avcont", seed, ctx, preview, video=item.video, audio=_sound(item)
        )
        video, audio = result.video[0], result.audio[0]
        values = {
            "position_error": _position_error_after(video, item, CONDITION_FRAMES),
            "corr": ev.pitch_height(video, audio, result.sample_rate),
        }
        return Outcome([Medium("video", "generated, with its sound", video, audio)], values)


class Unconditional(Case):
    key, title, tasks = "uncond", "Unconditional video", ("uncond",)
    about = "No input at all: a clip of the world as the model imagines one."
    figures = (Figure("found", "clips with one object of the world's palette found"),)

    def inputs(self, item, ctx):
        return []

    def run(self, engine, item, seed, ctx, preview):
        video = _generate(engine, self.tasks[0], seed, ctx, preview).video[0]
        kind = "image" if video.shape[1] == 1 else "video"
        return Outcome(
            [Medium(kind, "generated", video)],
            {"found": float(analyser.analyse_video(video).found)},
        )


class UnconditionalImage(Unconditional):
    key, title, tasks, image = "uncond_image", "Unconditional image", ("uncond_image",), True
    about = "No input at all: one image."
    preview = False


class SuperResolution(Case):
    """The bundle's refiner (``superres`` if it holds several) on held-out clips, as
    ``videopoet evaluate`` measures it: the clip is drawn at the refined size (the ground
    truth) and bicubic-downsampled to the bundle's format (the input); the reference is the
    input encoded and decoded by the visual tokenizer, then bicubic-upsampled."""

    key, title = "superres", "Super-resolution"
    about = (
        "A held-out clip drawn at the larger size and bicubic-downsampled to the bundle's "
        "format, refined back to the larger size."
    )
    figures = (Figure("psnr", "PSNR vs the clip drawn at the larger size (dB)"),)
    reference = "bicubic"
    preview = False

    def __init__(self) -> None:
        self._reference: dict[int, Outcome] = {}  # sample index -> the bicubic outcome

    def unavailable(self, engine):
        if not getattr(engine, "refiners", None):
            return (
                "this bundle holds no super-resolution stage (no refiner); a bundle trained with "
                "one shows it here"
            )
        return None

    def inputs(self, item, ctx):
        return [_clip(item, "input clip")]  # replaced by what run() gives the refiner

    def run(self, engine, item, seed, ctx, preview):
        name = "superres" if "superres" in engine.refiners else sorted(engine.refiners)[0]
        scale = getattr(engine.refiners[name], "scale", 2)
        _, frames, height, width = item.video.shape
        truth = world.sample(item.index, frames, height * scale, width * scale, ctx.world).video
        low = bicubic(truth, height, width)
        out = engine.refine(name, low[None], text=item.caption, seed=seed)[0].float().cpu()
        shape = engine.visual_spec.latent_shape(frames, height, width)
        decoded = engine.decode_video(engine.encode_video(low), shape)[0].clamp(-1, 1)
        upsampled = bicubic(decoded, height * scale, width * scale)
        self._reference[item.index] = Outcome(
            [Medium("video", "the input through the tokenizer, bicubic-upsampled", upsampled)],
            {"psnr": ev.psnr(upsampled, truth)},
        )
        return Outcome(
            [Medium("video", f"refined by {name}", out)],
            {"psnr": ev.psnr(out, truth)},
            inputs=[
                Medium("video", f"input ({height}x{width})", low),
                Medium("video", f"the clip drawn at {height * scale}x{width * scale}", truth),
                Medium("text", "prompt", text=item.caption),
            ],
        )

    def run_reference(self, engine, item, seed, ctx):
        return self._reference.pop(item.index)


def bicubic(video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Each frame of (3, T, H, W) resized bicubically to (height, width) (antialiased when
    shrinking, as the refiner's training inputs are made), clamped to [-1, 1]."""
    frames = video.permute(1, 0, 2, 3).float()
    shrink = height < video.shape[2] or width < video.shape[3]
    out = torch.nn.functional.interpolate(
        frames, size=(height, width), mode="bicubic", align_corners=False, antialias=shrink
    )
    return out.permute(1, 0, 2, 3).clamp(-1, 1)


def recipe_runner(name: str) -> Callable[..., Any] | None:
    """``run_recipe`` when the recipes package is installed and has the built-in ``name``."""
    try:
        from videopoet.recipes import builtin_recipes, run_recipe
    except ImportError:
        return None
    return run_recipe if name in {r["name"] for r in builtin_recipes()} else None


def run_builtin_recipe(
    engine: Any, name: str, inputs: dict[str, Any], seed: int, ctx: Context
) -> list[Any]:
    """Run the built-in recipe ``name`` with ``engine``: ``inputs`` override its inputs (a
    tensor is written to a PNG of its first frame); returns its steps' results in order."""
    import tempfile
    from pathlib import Path

    from videopoet.data.media import tensor_to_frames, write_png

    run = recipe_runner(name)
    if run is None:
        raise ConfigError("recipe", name, "a built-in recipe of the installed recipes package")
    with tempfile.TemporaryDirectory(prefix="videopoet-demo-") as tmp:
        overrides = [f"defaults.seed={seed}"]
        overrides += [f"defaults.{k}={v}" for k, v in ctx.sampling.items() if v is not None]
        for key, value in inputs.items():
            if torch.is_tensor(value):
                value = write_png(Path(tmp) / f"{key}.png", tensor_to_frames(value[:, :1]))
            overrides.append(f"inputs.{key}={value}")
        result = run(name, overrides, out=Path(tmp) / "run", engine=engine, allow=[tmp])
        return list(result.steps.values())


class _Chain(Case):
    """Two tasks in a row: the built-in recipe ``recipe`` when the recipes package has it
    (``videopoet run``), else the same two steps called here."""

    recipe = ""
    preview = False

    def describe(self) -> str:
        if recipe_runner(self.recipe) is not None:
            return f"{self.about} Run as the built-in recipe: videopoet run {self.recipe}."
        return f"{self.about} Chained here (no built-in recipe {self.recipe} is installed)."


class ChainImageStylize(_Chain):
    key, title = "chain_i2v_stylize", "Chain: image-to-video, then stylization"
    tasks = ("i2v", "stylize")
    recipe = "animate_then_stylize"
    about = (
        "Step 1 animates the first frame of a held-out clip (with its caption); step 2 "
        "restyles step 1's video with a prompt that names a new colour."
    )
    figures = (
        Figure("color", "final object colour = the new prompt's"),
        Figure("flow_epe", "final flow vs step 1's, end-point error (px)", "lower"),
    )

    def inputs(self, item, ctx):
        _, text, _ = _restyle(item)
        return [
            Medium("image", "given image", item.video[:, :1]),
            Medium("text", "step 1 prompt", text=item.caption),
            Medium("text", "step 2 prompt", text=text),
        ]

    def run(self, engine, item, seed, ctx, preview):
        color, text, _ = _restyle(item)
        image = item.video[:, :1]
        if recipe_runner(self.recipe) is not None:
            given = {"image": image, "prompt": item.caption, "style": text}
            steps = run_builtin_recipe(engine, self.recipe, given, seed, ctx)
            step1, step2 = steps[0].video, steps[-1].video
        else:
            first = _generate(engine, "i2v", seed, ctx, None, image=image, text=item.caption)
            step1 = first.video[0]
            second = _generate(engine, "stylize", seed, ctx, None, text=text, video=step1)
            step2 = second.video[0]
        values = {
            "color": float(analyser.analyse_video(step2).color == color),
            "flow_epe": ev.flow_epe(step2, step1),
        }
        return Outcome(
            [Medium("video", "step 1: i2v", step1), Medium("video", "step 2: stylize", step2)],
            values,
        )


class ChainTextSound(_Chain):
    key, title = "chain_t2v_v2a", "Chain: text-to-video, then video-to-audio"
    tasks = ("t2v", "v2a")
    recipe = "text_to_audiovisual"
    about = (
        "Step 1 makes a clip from a held-out caption (an object moving vertically); step 2 "
        "makes its sound."
    )
    figures = (
        Figure("motion", "step 1 motion = the prompt's"),
        Figure("corr", "step 1 object height vs step 2 pitch (Pearson)"),
    )

    def picks(self, item):
        return item.motion in ev.VERTICAL

    def inputs(self, item, ctx):
        return [Medium("text", "prompt", text=item.caption)]

    def run(self, engine, item, seed, ctx, preview):
        if recipe_runner(self.recipe) is not None:
            steps = run_builtin_recipe(engine, self.recipe, {"prompt": item.caption}, seed, ctx)
            video, audio, rate = steps[0].video, steps[-1].audio, steps[-1].sample_rate
        else:
            video = _generate(engine, "t2v", seed, ctx, None, text=item.caption).video[0]
            result = _generate(engine, "v2a", seed, ctx, None, video=video)
            audio, rate = result.audio[0], result.sample_rate
        values = {
            "motion": ev.caption_matches(video, item)["direction"],
            "corr": ev.pitch_height(video, audio, rate),
        }
        return Outcome(
            [
                Medium("video", "step 1: t2v", video),
                Medium("video", "step 2: v2a (with step 1's clip)", video, audio),
            ],
            values,
        )


class OtherTask(Case):
    """A task installed by a third-party plugin: inputs made from a world sample by kind."""

    about = "A task from an installed plugin; its inputs are made from a held-out world sample."
    preview = False

    def __init__(self, name: str, description: str) -> None:
        self.key, self.title, self.tasks = name, f"{name} (plugin task)", (name,)
        self.about = f"{description}. {self.about}"

    def _given(self, engine: Any, item: world.WorldSample, ctx: Context) -> dict[str, Any]:
        from videopoet.tasks.base import Source
        from videopoet.testing import sample_inputs

        behaviour = engine.task(self.key)
        fmt = ctx.image_fmt if behaviour.spec.target.visual == "image" else ctx.fmt
        return sample_inputs(behaviour, Source.from_world(item), fmt)

    def inputs(self, item, ctx):
        return [_clip(item, "world sample")]

    def run(self, engine, item, seed, ctx, preview):
        result = _generate(engine, self.key, seed, ctx, None, **self._given(engine, item, ctx))
        if result.video is None:
            return Outcome([Medium("audio", "generated", audio=result.audio[0])], {})
        video = result.video[0]
        audio = None if result.audio is None else result.audio[0]
        kind = "image" if video.shape[1] == 1 else "video"
        return Outcome([Medium(kind, "generated", video, audio)], {})


def built_in_cases() -> list[Case]:
    """Every case of the full demo, in gallery order (third-party tasks are added after)."""
    return [
        TextToVideo(),
        TextToImage(),
        ImageToVideo(),
        FramePrediction(),
        LongVideo(),
        Inpaint(),
        Outpaint(),
        Stylize(),
        StylizeFirstFrame(),
        AudioToVideo(),
        VideoToAudio(),
        AudioVideoContinuation(),
        Unconditional(),
        UnconditionalImage(),
        SuperResolution(),
        ChainImageStylize(),
        ChainTextSound(),
    ]


#: the reduced set of ``--quick``: a video, an image in and out, a sound in and out, a chain
QUICK = ("t2v", "t2i", "i2v", "inpaint", "stylize_first_frame", "a2v", "v2a", "chain_t2v_v2a")


def select_cases(engine: Any, quick: bool = False, only: list[str] | None = None) -> list[Case]:
    """The cases to run: ``only`` (keys), else the quick set, else every case and one per
    installed third-party task."""
    cases = built_in_cases()
    known = {c.key: c for c in cases}
    if only is not None:
        unknown = [k for k in only if k not in known]
        if unknown:
            raise ConfigError("cases", ",".join(unknown), f"cases among {', '.join(known)}")
        return [known[k] for k in only]
    if quick:
        return [known[k] for k in QUICK]
    covered = {t for c in cases for t in c.tasks}
    for name in engine.tasks():
        if name not in covered and engine.registry.owner("tasks", name) != "videopoet":
            cases.append(OtherTask(name, engine.registry.task(name).description))
    return cases
