"""Task behaviour: what a task does with media, next to its declaration (paper 4.1).

A :class:`Task` carries its :class:`~videopoet.core.declarations.TaskSpec` as ``spec`` and
turns media into the media-level prefix and target the engine tokenizes:

- :meth:`Task.build_example`: a training example from a :class:`Source` (a world sample or a
  real clip with its sound and caption), drawn with a seeded ``random.Random``;
- :meth:`Task.prepare`: the same prefix from what a user gives (files or tensors), each input
  checked against the declaration;
- :meth:`Task.to_media`: the decoded target back as media.

Every default follows the declaration, so most tasks are a declaration and one or two
overrides (a mask, a structure clip, a condition cut). The engine never special-cases a task:
it tokenizes :class:`Conditions` with the registered tokenizers and builds the layout.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from videopoet.core.declarations import FPS, Format, TaskSpec, VisualInput
from videopoet.core.errors import VideoPoetError

#: What a user input is, for listings and checks.
INPUT_KINDS = ("text", "image", "video", "audio", "mask", "choice", "number")


class InputError(VideoPoetError, ValueError):
    """A user input that the task cannot take: names the input, the value and what it takes."""

    def __init__(self, task: str, name: str, value: Any, expected: str) -> None:
        shown = value if isinstance(value, str | int | float | type(None)) else _describe(value)
        super().__init__(f"task {task}: input {name}={shown!r}: expected {expected}")
        self.task, self.name, self.value, self.expected = task, name, value, expected


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    return type(value).__name__


@dataclass(frozen=True)
class InputInfo:
    """One input a user can give a task."""

    name: str
    kind: str  # one of INPUT_KINDS
    optional: bool
    help: str = ""

    def __str__(self) -> str:
        return f"{self.name} ({self.kind}{', optional' if self.optional else ''})"


@dataclass
class Source:
    """A clip a training example is cut from: its frames, sound, caption and known structure.

    ``video`` (3, T, H, W) in [-1, 1] at 8 fps; ``audio`` (samples,) in [-1, 1] at
    ``sample_rate`` or None; ``depth`` (T, H, W) in [0, 1] (0 near) and ``flow``
    (T - 1, 2, H, W) in pixels when known (the world's ground truth).
    """

    video: torch.Tensor
    audio: torch.Tensor | None = None
    sample_rate: int = 16_000
    caption: str | None = None
    depth: torch.Tensor | None = None
    flow: torch.Tensor | None = None

    @classmethod
    def from_world(cls, sample: Any) -> Source:
        """A :class:`~videopoet.data.world.WorldSample` as a source (ground truth included)."""
        return cls(
            video=sample.video,
            audio=sample.audio.reshape(-1),
            sample_rate=sample.sample_rate,
            caption=sample.caption,
            depth=sample.depth,
            flow=sample.flow,
        )

    @classmethod
    def from_clip(cls, clip: Any, caption: str | None = None) -> Source:
        """A :class:`~videopoet.data.media.Clip` read from a file as a source."""
        from videopoet.data.media import frames_to_tensor

        audio = None if clip.audio is None else clip.audio.reshape(-1)
        return cls(frames_to_tensor(clip.frames), audio, clip.sample_rate, caption)


@dataclass
class Conditions:
    """The media-level prefix: what the engine tokenizes into the prefix spans.

    ``visual``: input name → (3, T, H, W) in [-1, 1]; ``masks``: input name → (T, H, W) bool,
    True where a pixel is hidden (masked inputs are COMMIT-encoded with it applied);
    ``audio``: (samples,) in [-1, 1]. An optional input left out is simply absent.
    """

    text: str | None = None
    visual: dict[str, torch.Tensor] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    audio: torch.Tensor | None = None

    def present(self) -> set[str]:
        names = set(self.visual)
        if self.text is not None:
            names.add("text")
        if self.audio is not None:
            names.add("audio")
        return names


@dataclass
class TaskExample:
    """One training example at media level: the prefix and the target the loss is on."""

    task: str
    format: Format
    conditions: Conditions
    video: torch.Tensor | None = None  # (3, T, H, W) target clip (T = 1 for an image)
    audio: torch.Tensor | None = None  # (samples,) target sound


@dataclass
class TaskOutput:
    """Generated media: ``video`` (B, 3, T, H, W) in [-1, 1], ``audio`` (B, samples)."""

    video: torch.Tensor | None = None
    audio: torch.Tensor | None = None
    fps: float = FPS
    sample_rate: int = 16_000

    @property
    def images(self) -> torch.Tensor | None:
        """(B, 3, H, W) when the output is one frame."""
        if self.video is None or self.video.shape[2] != 1:
            return None
        return self.video[:, :, 0]


@dataclass(frozen=True)
class Context:
    """What input preparation needs to know about the model it prepares for."""

    format: Format
    sample_rate: int = 16_000
    fps: float = FPS


class Task:
    """Base class of a task's behaviour; subclasses set ``spec`` and override what differs.

    Registered like a declaration (``register_tasks`` returns the class). A plugin that returns
    a bare ``TaskSpec`` gets this base behaviour.
    """

    spec: ClassVar[TaskSpec]
    #: how often a training example leaves out each optional input (docs/tasks.md)
    optional_drop: ClassVar[float] = 0.3

    def __init__(self, spec: TaskSpec | None = None) -> None:
        if spec is not None:
            self.spec = spec  # type: ignore[misc]
        if getattr(self, "spec", None) is None:
            raise TypeError(f"{type(self).__name__} has no spec: set the class attribute")

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec.name!r})"

    # ------------------------------------------------------------------ user inputs

    def input_key(self, entry: VisualInput) -> str:
        """The user-facing name of a visual input: ``image``/``video`` for the single one."""
        if entry.name != "visual":
            return entry.name
        return "image" if entry.kind == "image" else "video"

    def inputs(self) -> list[InputInfo]:
        """Every input a user can give, with its kind and whether it is optional."""
        prefix, out = self.spec.prefix, []
        if prefix.text:
            out.append(InputInfo("text", "text", prefix.is_optional("text"), "the prompt"))
        for entry in prefix.visual_inputs:
            kind = "image" if entry.kind == "image" else "video"
            out.append(InputInfo(self.input_key(entry), kind, entry.optional, entry.kind))
        if prefix.audio:
            out.append(InputInfo("audio", "audio", prefix.is_optional("audio"), "the sound"))
        return out + self.extra_inputs()

    def extra_inputs(self) -> list[InputInfo]:
        """Inputs beyond the prefix's media (a mask, a direction); none by default."""
        return []

    def takes(self) -> str:
        return ", ".join(str(i) for i in self.inputs()) or "no inputs"

    def check_inputs(self, given: dict[str, Any]) -> None:
        """Names only (no file is read): an unknown input or a missing required one."""
        known = {i.name: i for i in self.inputs()}
        for name, value in given.items():
            if name not in known:
                raise InputError(
                    self.name, name, value, f"one of the task's inputs: {self.takes()}"
                )
        for info in known.values():
            if not info.optional and given.get(info.name) is None:
                raise InputError(
                    self.name, info.name, None, f"a value; the task takes {self.takes()}"
                )

    def prepare(self, inputs: dict[str, Any], context: Context) -> Conditions:
        """The prefix media from a user's inputs (paths or tensors), checked and resized."""
        inputs = {k: v for k, v in inputs.items() if v is not None}
        self.check_inputs(inputs)
        fmt, prefix = context.format, self.spec.prefix
        out = Conditions()
        if prefix.text and "text" in inputs:
            out.text = self.load_text(inputs["text"])
        for entry in prefix.visual_inputs:
            key = self.input_key(entry)
            if key not in inputs:
                continue
            if entry.kind == "image":
                out.visual[entry.name] = self.load_image(key, inputs[key], fmt)
            else:
                frames = self.input_frames(entry, inputs, fmt)
                clip = self.load_video(key, inputs[key], fmt, frames)
                out.visual[entry.name] = self.condition_video(entry, clip, inputs, context)
                if entry.kind == "masked_video":
                    out.masks[entry.name] = self.user_mask(inputs, fmt, frames)
        if prefix.audio and "audio" in inputs:
            seconds = self.condition_seconds(fmt)
            out.audio = self.load_audio("audio", inputs["audio"], context, seconds)
        return out

    def input_frames(self, entry: VisualInput, inputs: dict[str, Any], fmt: Format) -> int:
        """Frames a video input is cut to: its declared count, else the output's."""
        return entry.frames or fmt.frames

    def condition_video(
        self, entry: VisualInput, clip: torch.Tensor, inputs: dict[str, Any], context: Context
    ) -> torch.Tensor:
        """A video input as the prefix holds it; a structure input computes its clip here."""
        if entry.kind == "structure_video":
            return self.structure(clip, inputs, context)
        return clip

    def structure(
        self, clip: torch.Tensor, inputs: dict[str, Any], context: Context
    ) -> torch.Tensor:
        raise NotImplementedError(f"task {self.name} has a structure input but no structure()")

    def user_mask(self, inputs: dict[str, Any], fmt: Format, frames: int) -> torch.Tensor:
        raise NotImplementedError(f"task {self.name} has a masked input but no user_mask()")

    def condition_seconds(self, fmt: Format) -> float:
        frames = self.spec.prefix.condition_frames
        return frames / FPS if frames else fmt.seconds

    # ------------------------------------------------------------------ loading

    def load_text(self, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise InputError(self.name, "text", value, "a non-empty string")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(self.name, "text", value, "valid Unicode text") from exc
        return value

    def load_image(self, name: str, value: Any, fmt: Format) -> torch.Tensor:
        """(3, 1, H, W) in [-1, 1] from a path (image or video: its first frame) or a tensor."""
        if isinstance(value, torch.Tensor):
            if value.dim() == 3:
                value = value.unsqueeze(1)
            return self._check_tensor(name, value, fmt, 1)[:, :1]
        return self._read_visual(name, value, fmt, 1, what="an image")

    def load_video(self, name: str, value: Any, fmt: Format, frames: int) -> torch.Tensor:
        """(3, frames, H, W) in [-1, 1] from a path (the first frames) or a tensor."""
        if isinstance(value, torch.Tensor):
            return self._check_tensor(name, value, fmt, frames)[:, :frames]
        return self._read_visual(name, value, fmt, frames, what="a video")

    def load_audio(self, name: str, value: Any, context: Context, seconds: float) -> torch.Tensor:
        """(samples,) in [-1, 1] at the model's rate, exactly ``seconds`` long."""
        need = round(seconds * context.sample_rate)
        if isinstance(value, torch.Tensor):
            wav = value.float().reshape(-1) if value.dim() <= 2 else None
            if wav is None or (value.dim() == 2 and value.shape[0] != 1):
                raise InputError(self.name, name, value, "a (samples,) or (1, samples) waveform")
            if not torch.isfinite(wav).all() or wav.abs().max() > 1.0 + 1e-4:
                raise InputError(self.name, name, value, "finite samples in [-1, 1]")
        else:
            from videopoet.data.media import read_audio

            path = self._existing(name, value)
            info = self._probe(name, path)
            if not info.has_audio:
                raise InputError(self.name, name, str(path), "a file with an audio track")
            wav = read_audio(path, sample_rate=context.sample_rate).reshape(-1)
        if wav.shape[0] < need:
            raise InputError(
                self.name,
                name,
                value if isinstance(value, str) else f"{wav.shape[0]} samples",
                f"at least {seconds:g} s ({need} samples at {context.sample_rate} Hz)",
            )
        return wav[:need].clamp(-1, 1)

    def _existing(self, name: str, value: Any) -> Path:
        if not isinstance(value, str | Path):
            raise InputError(self.name, name, value, "a file path or a tensor")
        path = Path(value)
        if not path.is_file():
            raise InputError(self.name, name, str(value), "an existing file")
        return path

    def _probe(self, name: str, path: Path) -> Any:
        from videopoet.data.media import MediaError, probe

        try:
            return probe(path)
        except MediaError as exc:
            raise InputError(self.name, name, str(path), f"a readable media file ({exc})") from exc

    def _read_visual(
        self, name: str, value: Any, fmt: Format, frames: int, what: str
    ) -> torch.Tensor:
        from videopoet.data.media import MediaError, frames_to_tensor, read_frames

        path = self._existing(name, value)
        info = self._probe(name, path)
        if not info.has_video:
            raise InputError(self.name, name, str(path), f"{what} (the file has no picture)")
        try:
            pixels = read_frames(path, size=(fmt.height, fmt.width), frames=frames)
        except MediaError as exc:
            raise InputError(self.name, name, str(path), f"a readable {what} ({exc})") from exc
        if pixels.shape[0] < frames:
            raise InputError(
                self.name,
                name,
                str(path),
                f"at least {frames} frames at {FPS} fps ({frames / FPS:g} s); it has "
                f"{pixels.shape[0]}",
            )
        return frames_to_tensor(pixels[:frames])

    def _check_tensor(
        self, name: str, value: torch.Tensor, fmt: Format, frames: int
    ) -> torch.Tensor:
        shape = (3, frames, fmt.height, fmt.width)
        if value.dim() != 4 or value.shape[0] != 3 or tuple(value.shape[2:]) != shape[2:]:
            raise InputError(self.name, name, value, f"a (3, T, {fmt.height}, {fmt.width}) clip")
        if value.shape[1] < frames:
            raise InputError(self.name, name, value, f"at least {frames} frames")
        if not value.is_floating_point() or not torch.isfinite(value).all():
            raise InputError(self.name, name, value, "finite floats in [-1, 1]")
        if value.abs().max() > 1.0 + 1e-4:
            raise InputError(self.name, name, value, "values in [-1, 1]")
        return value.float()

    # ------------------------------------------------------------------ training examples

    def build_example(self, source: Source, fmt: Format, rng: random.Random) -> TaskExample:
        """A training example: the prefix and target media cut from ``source`` at ``fmt``."""
        video = self.fit_source(source, fmt)
        prefix, out = self.spec.prefix, Conditions()
        if prefix.text:
            if source.caption is None and not prefix.is_optional("text"):
                raise InputError(self.name, "caption", None, "a caption (the task needs text)")
            out.text = source.caption
        for entry in prefix.visual_inputs:
            if entry.kind == "image":
                out.visual[entry.name] = video[:, :1]
                continue
            frames = entry.frames or fmt.frames
            out.visual[entry.name] = video[:, :frames]
            if entry.kind == "masked_video":
                out.masks[entry.name] = self.draw_mask(fmt, frames, rng)
            elif entry.kind == "structure_video":
                out.visual[entry.name] = self.source_structure(source, fmt)
        if prefix.audio:
            out.audio = self.cut_audio(source, self.condition_seconds(fmt))
        self.drop_optional(out, rng)
        target_video = None
        if self.spec.target.visual == "image":
            target_video = video[:, :1]
        elif self.spec.target.visual:
            target_video = video
        target_audio = self.cut_audio(source, fmt.seconds) if self.spec.target.audio else None
        return TaskExample(self.name, fmt, out, target_video, target_audio)

    def drop_optional(self, conditions: Conditions, rng: random.Random) -> None:
        """Leave each optional input out with probability ``optional_drop``: a user may leave
        it out, and a layout without its span must be trained too."""
        prefix = self.spec.prefix
        for name in sorted(conditions.present()):
            if prefix.is_optional(name) and rng.random() < self.optional_drop:
                if name == "text":
                    conditions.text = None
                elif name == "audio":
                    conditions.audio = None
                else:
                    conditions.visual.pop(name, None)
                    conditions.masks.pop(name, None)

    def fit_source(self, source: Source, fmt: Format) -> torch.Tensor:
        """The source's first ``fmt.frames`` frames; its size must already be the format's."""
        video = source.video
        if video.dim() != 4 or video.shape[0] != 3:
            raise InputError(self.name, "source.video", video, "a (3, T, H, W) clip")
        if tuple(video.shape[2:]) != (fmt.height, fmt.width) or video.shape[1] < fmt.frames:
            raise InputError(
                self.name, "source.video", video, f"at least {fmt} (frames x height x width)"
            )
        return video[:, : fmt.frames]

    def cut_audio(self, source: Source, seconds: float) -> torch.Tensor:
        if source.audio is None:
            raise InputError(self.name, "source.audio", None, "a sound track (the task uses audio)")
        need = math.floor(seconds * source.sample_rate + 1e-6)
        if source.audio.shape[-1] < need:
            raise InputError(self.name, "source.audio", source.audio, f"at least {seconds:g} s")
        return source.audio.reshape(-1)[:need]

    def draw_mask(self, fmt: Format, frames: int, rng: random.Random) -> torch.Tensor:
        raise NotImplementedError(f"task {self.name} has a masked input but no draw_mask()")

    def source_structure(self, source: Source, fmt: Format) -> torch.Tensor:
        raise NotImplementedError(
            f"task {self.name} has a structure input but no source_structure()"
        )

    # ------------------------------------------------------------------ outputs

    def to_media(self, output: TaskOutput, conditions: Conditions) -> TaskOutput:
        """The decoded target as the task hands it back: as decoded, except that a masked
        input's visible pixels are handed back as given (:func:`keep_visible_pixels`)."""
        return keep_visible_pixels(output, conditions)


def keep_visible_pixels(output: TaskOutput, conditions: Conditions) -> TaskOutput:
    """The generated clip inside each masked input's hidden region, the given pixels outside it
    (inpainting, outpainting, any task with a ``masked_video`` input).

    The LM regenerates the whole clip and the tokenizer's decode of the visible part is close
    to the given one, not equal (about 23 dB for the tiny tokenizer); a user who masked a box
    expects the rest back as given. The raw decode stays available from the result's tokens:
    ``engine.decode_video(result.layout.split(result.tokens)["visual_out"], shape)``."""
    if output.video is None or not conditions.masks:
        return output
    video = output.video
    for name, hidden in conditions.masks.items():
        given = conditions.visual.get(name)
        if given is None or given.shape[-3:] != video.shape[-3:]:
            continue  # a condition of another size than the output: nothing to paste
        keep = ~hidden.to(video.device)
        video = torch.where(keep[None, None], given.to(video)[None], video)
    return TaskOutput(video, output.audio, output.fps, output.sample_rate)


def task_class(spec: TaskSpec) -> type[Task]:
    """The base behaviour for a bare declaration."""
    return type(f"Task_{spec.name}", (Task,), {"spec": spec})
