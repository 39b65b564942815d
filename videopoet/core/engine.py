"""The ``Engine``: one object from media to media (ARCHITECTURE.md, "The Engine and the bundle").

``Engine.from_pretrained(dir)`` loads a bundle; ``engine.generate(task, **inputs)`` asks the
task to prepare its inputs, tokenizes them with the bundle's tokenizers, builds the layout,
samples the target with the prefix LM, splits it into spans, decodes them and asks the task for
media. ``engine.encode_example(example)`` turns a task's training example into the tokens the
LM trainer consumes. The engine knows no concrete task or tokenizer: tasks come from the
registry, tokenizers from the bundle.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from videopoet.core.bundle import (
    AUDIO_DIR,
    BUNDLE_NAME,
    DEMO_FORMATS,
    LM_DIR,
    PAPER_FORMATS,
    REFINERS_DIR,
    VISUAL_DIR,
    BundleConfig,
    TextEncoderRecord,
    read_bundle_config,
    write_bundle_config,
)
from videopoet.core.commit_fill import COMMIT_FILLS, DEFAULT_FILL, LEGACY_FILL, fill_hidden
from videopoet.core.declarations import FPS, Format, TaskSpec, parse_format
from videopoet.core.errors import ConfigError, LayoutError, VideoPoetError
from videopoet.core.generation_config import (
    SAMPLING_KEYS,
    GenerationDefaults,
    check_tasks,
    parse_generation,
)
from videopoet.core.serialization import load_json, load_tensors, write_atomic_dir
from videopoet.sequences.layout import Layout, build_layout

#: below this many LM parameters, CPU sampling runs on one thread (Engine.decode_threads)
SMALL_MODEL = 50_000_000

#: callback of the progressive preview: (frames so far (B, 3, T, H, W), latent frames done)
PreviewFn = Callable[[torch.Tensor, int], None]


@dataclass
class EncodedExample:
    """A training example as the LM sees it: ids (L,), text embeddings and the layout."""

    task: str
    layout: Layout
    tokens: torch.Tensor  # (L,) global ids, text slots hold <pad>
    text: torch.Tensor | None  # (K, text_dim) or None
    text_mask: torch.Tensor | None  # (K,) bool

    @property
    def prefix_length(self) -> int:
        return self.layout.prefix_length


@dataclass
class GenerationResult:
    """What ``generate`` returns: media, the tokens they came from, and where time went."""

    task: str
    format: Format
    video: torch.Tensor | None  # (B, 3, T, H, W) in [-1, 1]; T = 1 for an image
    audio: torch.Tensor | None  # (B, samples) in [-1, 1]
    tokens: torch.Tensor  # (B, target length) global ids
    layout: Layout
    fps: float = 8.0
    sample_rate: int = 16_000
    timings: dict[str, float] = field(default_factory=dict)
    #: the sampling settings used: explicit arguments over the bundle's defaults
    sampling: dict[str, Any] = field(default_factory=dict)

    @property
    def images(self) -> torch.Tensor | None:
        """(B, 3, H, W) when the output is one frame."""
        if self.video is None or self.video.shape[2] != 1:
            return None
        return self.video[:, :, 0]

    def save(self, out_dir: str | Path, stem: str = "sample") -> list[Path]:
        """Write each sample: MP4 (audio muxed when there is audio), PNG for an image, WAV."""
        from videopoet.data.media import tensor_to_frames, write_mp4, write_png, write_wav

        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError("out", str(out), f"a folder that can be created ({exc})") from None
        written: list[Path] = []
        count = (self.video if self.video is not None else self.audio).shape[0]  # type: ignore[union-attr]
        for i in range(count):
            name = f"{stem}_{i}" if count > 1 else stem
            audio = self.audio[i] if self.audio is not None else None
            if self.video is not None:
                frames = tensor_to_frames(self.video[i])
                if frames.shape[0] == 1:
                    written.append(write_png(out / f"{name}.png", frames))
                else:
                    written.append(
                        write_mp4(out / f"{name}.mp4", frames, self.fps, audio, self.sample_rate)
                    )
            if audio is not None:
                written.append(write_wav(out / f"{name}.wav", audio, self.sample_rate))
        return written


class Engine:
    """A loaded bundle: the prefix LM, its vocabulary, tokenizers, text encoder and formats."""

    def __init__(
        self,
        lm: Any,
        *,
        visual: Any = None,
        audio: Any = None,
        text_encoder: Any = None,
        text_record: TextEncoderRecord | None = None,
        formats: list[Format] | None = None,
        registry: Any = None,
        generation: GenerationDefaults | dict[str, Any] | None = None,
        commit_fill: str = LEGACY_FILL,
    ) -> None:
        """``visual`` / ``audio``: (network, registered declaration) pairs, or None;
        ``generation``: the bundle's sampling defaults (None: the section is absent);
        ``commit_fill``: what hidden pixels of a masked condition become before encoding
        (:mod:`videopoet.core.commit_fill`; the LM is trained for one)."""
        from videopoet.core.plugins import get_registry

        self.lm, self.vocab = lm, lm.vocab
        self.visual, self.visual_spec = visual if visual is not None else (None, None)
        self.audio, self.audio_spec = audio if audio is not None else (None, None)
        self.text_encoder, self.text_record = text_encoder, text_record
        self.formats = list(formats or [parse_format(f) for f in PAPER_FORMATS])
        self._memo: dict | None = None
        self.registry = registry if registry is not None else get_registry()
        #: Loaded refiners by registered name (super-resolution stages, ...); see ``refine``.
        self.refiners: dict[str, Any] = {}
        self.generation = generation
        if commit_fill not in COMMIT_FILLS:
            raise ConfigError("commit_fill", commit_fill, f"one of {', '.join(COMMIT_FILLS)}")
        self.commit_fill = commit_fill

    # ------------------------------------------------------------------ sampling defaults

    @property
    def generation(self) -> GenerationDefaults | None:
        """The bundle's ``generation`` section (None: absent, today's defaults apply); set it
        with a :class:`GenerationDefaults`, a mapping (validated) or None; ``save_pretrained``
        writes it."""
        return self._generation

    @generation.setter
    def generation(self, value: GenerationDefaults | dict[str, Any] | None) -> None:
        if value is not None:
            value = parse_generation(value)
            check_tasks(value, self.registry)
        self._generation = value

    def sampling_for(
        self,
        task: str,
        *,
        cfg_scale: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
    ) -> dict[str, Any]:
        """The settings ``generate(task, ...)`` samples with: each value given here, else the
        bundle's default for ``task`` (its ``generation.tasks`` entry, else the bundle-level
        value). ``top_k=0`` and ``top_p=1`` switch those off whatever the bundle says. A task
        with no condition to drop uses ``cfg_scale`` 1 (a given value other than 1 is an
        error)."""
        from videopoet.core.generation import _check_options

        spec = self.registry.task(task)
        settings = (self.generation or GenerationDefaults()).for_task(task)
        if not spec.cfg_drop:
            settings["cfg_scale"] = 1.0  # a bundle-wide default has nothing to guide here
            if cfg_scale is not None and cfg_scale != 1.0:
                raise ConfigError(
                    "cfg_scale",
                    cfg_scale,
                    f"1.0: task {task} has no condition to drop for guidance",
                )
        given = {"cfg_scale": cfg_scale, "temperature": temperature, "top_k": top_k}
        given["top_p"] = top_p
        settings |= {k: v for k, v in given.items() if v is not None}
        if settings["top_k"] == 0:
            settings["top_k"] = None
        _check_options(*(settings[k] for k in SAMPLING_KEYS))
        return settings

    def can_guide(self, task: str, format: Any = None, **inputs: Any) -> bool:
        """Whether guidance has a condition to drop for this call: the task's ``cfg_drop``
        conditions present in the layout ``inputs`` make (inpainting without a prompt: no)."""
        from videopoet.core.generation import droppable_conditions

        behaviour = self.check_inputs(task, inputs)
        if not behaviour.spec.cfg_drop:
            return False
        fmt = self.pick_format(behaviour.spec, format)
        _, layout = self._prepare_call(behaviour, fmt, inputs)
        return bool(droppable_conditions(layout))

    @property
    def _sample_rate(self) -> int:
        return self.audio_spec.sample_rate if self.audio is not None else 16_000

    def _prepare_call(self, behaviour: Any, fmt: Any, inputs: dict[str, Any]) -> tuple[Any, Any]:
        """The task's prepared conditions for ``inputs`` and the layout they make."""
        from videopoet.tasks.base import Context

        spec = behaviour.spec
        conditions = behaviour.prepare(inputs, Context(fmt, self._sample_rate))
        return conditions, self.layout(
            spec, fmt, conditions.present(), _video_frames(spec, conditions)
        )

    # ------------------------------------------------------------------ bundles

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: str | torch.device = "cpu", registry: Any = None
    ) -> Engine:
        """Load a bundle; a vocabulary that conflicts with the installed plugins is an error.

        An LM training run's checkpoint (``RUN/checkpoints/step_N``) or run folder (its newest
        checkpoint) loads too: the run's starting bundle with the checkpoint's LM weights."""
        from videopoet.core.lm_checkpoint import load_lm
        from videopoet.core.lm_training import engine_from_run, run_checkpoint
        from videopoet.core.plugins import get_registry

        directory = Path(directory)
        found = None if (directory / BUNDLE_NAME).is_file() else run_checkpoint(directory)
        if found is not None:
            return engine_from_run(*found, device=device, registry=registry)[0]
        config = read_bundle_config(directory)
        registry = registry if registry is not None else get_registry()
        visual = audio = (None, None)
        if config.visual_tokenizer:
            visual = load_tokenizer(directory / VISUAL_DIR, "visual", registry, device)
            for fmt in config.format_list:
                try:
                    visual[1].latent_shape(fmt.frames, fmt.height, fmt.width)
                except ConfigError as exc:
                    raise ConfigError(
                        f"{directory / 'bundle.json'}: formats", str(fmt), str(exc)
                    ) from None
        if config.audio_tokenizer:
            audio = load_tokenizer(directory / AUDIO_DIR, "audio", registry, device)
        lm = load_lm(
            directory / LM_DIR, registry=registry, visual=visual[1], audio=audio[1], device=device
        )
        encoder = None
        if config.text_encoder is not None:
            encoder = build_text_encoder(config.text_encoder, registry)
            if lm.config.text_dim != encoder.dim:
                raise ConfigError(
                    f"{directory}: text_encoder.dim",
                    encoder.dim,
                    f"{lm.config.text_dim} (the LM's)",
                )
        engine = cls(
            lm,
            visual=visual,
            audio=audio,
            text_encoder=encoder,
            text_record=config.text_encoder,
            formats=config.format_list,
            registry=registry,
            generation=config.generation,
            commit_fill=config.commit_fill,
        )
        for name in config.refiners:
            engine.refiners[name] = load_refiner(
                directory / REFINERS_DIR / name, name, registry, device
            )
        return engine

    def save_pretrained(self, directory: str | Path, description: str = "") -> Path:
        """Write the bundle atomically: a reader sees the old bundle or the whole new one."""
        from videopoet.core.lm_checkpoint import save_lm

        config = BundleConfig(
            formats=[str(f) for f in self.formats],
            visual_tokenizer=self.visual_spec.name if self.visual is not None else None,
            audio_tokenizer=self.audio_spec.name if self.audio is not None else None,
            text_encoder=self.text_record,
            refiners=sorted(self.refiners),
            description=description,
            generation=self.generation,
            commit_fill=self.commit_fill,
        )

        def fill(tmp: Path) -> None:
            save_lm(self.lm, tmp / LM_DIR, self.vocab)
            if self.visual is not None:
                self.visual.save_pretrained(tmp / VISUAL_DIR)
            if self.audio is not None:
                self.audio.save_pretrained(tmp / AUDIO_DIR)
            for name, refiner in self.refiners.items():
                refiner.save_pretrained(tmp / REFINERS_DIR / name)
            write_bundle_config(tmp, config)

        return write_atomic_dir(directory, fill)

    @classmethod
    def create(
        cls,
        *,
        preset: str = "tiny",
        visual_dir: str | Path | None = None,
        audio_dir: str | Path | None = None,
        text_encoder: str = "hash",
        text_options: dict[str, Any] | None = None,
        formats: list[str] | None = None,
        seed: int = 0,
        registry: Any = None,
        generation: GenerationDefaults | dict[str, Any] | None = None,
        commit_fill: str = DEFAULT_FILL,
        **model_overrides: Any,
    ) -> Engine:
        """An untrained LM around trained (or given) tokenizers: what ``videopoet init`` writes
        (``generation``: the bundle's sampling defaults, if any; ``commit_fill``: see
        :mod:`videopoet.core.commit_fill`)."""
        from videopoet.core.model import ModelConfig, PrefixLM
        from videopoet.core.plugins import get_registry
        from videopoet.core.vocabulary import Vocabulary

        registry = registry if registry is not None else get_registry()
        visual = load_tokenizer(visual_dir, "visual", registry) if visual_dir else (None, None)
        audio = load_tokenizer(audio_dir, "audio", registry) if audio_dir else (None, None)
        fmts = [parse_format(f) for f in (formats or preset_formats(preset))]
        vocab = Vocabulary(ordered_tasks(registry), visual[1], audio[1], formats=fmts)
        options = dict(text_options or {})
        encoder = registry.text_encoder(text_encoder).factory(**options)
        record = TextEncoderRecord(
            name=text_encoder, options=options, identity=encoder.identity, dim=encoder.dim
        )
        torch.manual_seed(seed)
        config = ModelConfig.preset(preset, vocab.size, text_dim=encoder.dim, **model_overrides)
        lm = PrefixLM(config)
        lm.vocab = vocab
        engine = cls(
            lm.eval(),
            visual=visual,
            audio=audio,
            text_encoder=encoder,
            text_record=record,
            formats=fmts,
            registry=registry,
            generation=generation,
            commit_fill=commit_fill,
        )
        engine.check_fits()
        return engine

    # ------------------------------------------------------------------ look-ups

    def task(self, name: str) -> Any:
        return self.registry.task_behaviour(name)

    def tasks(self) -> list[str]:
        """The registered tasks this bundle can run (its tokenizers cover their modalities)."""
        return [n for n, s in self.registry.tasks.items() if self._servable(s) is None]

    def _servable(self, spec: TaskSpec) -> str | None:
        needs_visual = spec.target.visual or spec.prefix.visual
        if needs_visual and self.visual is None:
            return "a visual tokenizer, and this bundle has none"
        if (spec.target.audio or spec.prefix.audio) and self.audio is None:
            return "an audio tokenizer, and this bundle has none"
        if spec.prefix.text and self.text_encoder is None:
            return "a text encoder, and this bundle has none"
        return None

    def pick_format(self, spec: TaskSpec, format: str | Format | None = None) -> Format:
        """The format to generate at: given (checked against the bundle), else the bundle's
        first format of the task's kind (image or video)."""
        image = spec.target.visual == "image"
        fitting = [f for f in self.formats if f.is_image == image]
        if spec.target.visual is None:  # audio only: the clip length of a video format
            fitting = [f for f in self.formats if not f.is_image] or self.formats
        shown = ", ".join(str(f) for f in self.formats)
        if format is None:
            if not fitting:
                kind = "image" if image else "video"
                raise ConfigError("format", None, f"a {kind} format; the bundle serves {shown}")
            return fitting[0]
        fmt = parse_format(format) if isinstance(format, str) else format
        if fmt not in self.formats:
            raise ConfigError("format", str(fmt), f"one of the bundle's formats: {shown}")
        if fmt not in fitting:
            kind = "1-frame" if image else "video (more than 1 frame)"
            raise ConfigError("format", str(fmt), f"a {kind} format for task {spec.name}")
        return fmt

    def layout(
        self,
        spec: TaskSpec,
        fmt: Format,
        present: set[str] | None = None,
        input_frames: dict[str, int] | None = None,
    ) -> Layout:
        """The task's layout at ``fmt`` with the optional inputs not in ``present`` left out;
        a layout longer than the LM's context, or wider than its grid embeddings, is an error
        here, before any work."""
        prefix = spec.prefix
        omit = []
        if present is not None:
            omit = [n for n in prefix.input_names if n != "visual" and n not in present]
            omit = [n for n in omit if prefix.is_optional(n)]
        layout = build_layout(
            spec,
            self.vocab,
            fmt,
            input_frames=input_frames or None,
            omit=omit,
            strict_format=False,
        )
        limit = self.lm.config.max_seq_len
        if layout.total_length > limit:
            raise LayoutError(
                f"task {spec.name} at {fmt} needs {layout.total_length} tokens; this model holds "
                f"{limit} (max_seq_len): choose a smaller format or a larger preset"
            )
        config = self.lm.config
        widest = max((max(place) for place in layout.grid), default=0)
        if config.grid_positions and widest > config.grid_size:
            raise LayoutError(
                f"task {spec.name} at {fmt} places tokens up to latent time/row/column {widest}; "
                f"this model's grid embeddings hold {config.grid_size} (grid_size): choose a "
                "smaller format or a model with a larger grid_size"
            )
        return layout

    def check_fits(self) -> None:
        """Every task this bundle can run fits the LM at every format it serves."""
        for name in self.tasks():
            spec = self.registry.task(name)
            for fmt in self.formats:
                if fmt.is_image != (spec.target.visual == "image"):
                    continue
                self.layout(spec, fmt)

    # ------------------------------------------------------------------ tokenizing

    def encode_conditions(
        self, layout: Layout, conditions: Any, batch: int = 1
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
        """Prefix content ids per span, and the text embeddings (B, K, dim) with their mask."""
        content: dict[str, torch.Tensor] = {}
        for entry in layout.task.prefix.visual_inputs:
            if not layout.has(entry.span):
                continue
            clip = conditions.visual[entry.name]
            content[entry.span] = self.encode_video(clip, conditions.masks.get(entry.name))
        if layout.has("audio_in"):
            content["audio_in"] = self.encode_audio(conditions.audio, layout.span("audio_in"))
        content = {k: v.expand(batch, -1) for k, v in content.items()}
        text = mask = None
        if layout.text_span is not None:
            encoded = self.text_encoder.encode([conditions.text])
            text = encoded.embeddings.expand(batch, -1, -1)
            mask = encoded.mask.expand(batch, -1)
        return content, text, mask

    @torch.no_grad()
    def encode_video(self, clip: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(3, T, H, W) → (1, N) ids; a mask (T, H, W) is applied first (COMMIT encoding:
        hidden pixels are replaced by the bundle's ``commit_fill``, made from the visible
        pixels only, so nothing hidden leaks into the condition).

        Inside :meth:`reuse_encodings` an identical clip is encoded once (the tasks built from
        one sample share their target clip)."""
        video = self._masked(clip, mask)
        memo = self._memo
        if memo is None:
            return self.visual.encode(video).cpu()
        key = _clip_key(video)
        if key not in memo:
            memo[key] = self.visual.encode(video).cpu()
        return memo[key]

    def _masked(self, clip: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        video = clip[None].to(_device(self.visual))
        if mask is not None:
            video = fill_hidden(video, mask.to(video.device), self.commit_fill)
        return video

    @torch.no_grad()
    def prime_encodings(self, clips: list[tuple[torch.Tensor, Any]], batch_size: int = 16) -> None:
        """Encode many (clip, mask) pairs in batches into the :meth:`reuse_encodings` memo, so
        the ``encode_example`` calls that follow find them (one batched call is ~5x cheaper
        per clip on a CPU than one call per clip)."""
        if self._memo is None:
            raise RuntimeError("prime_encodings works inside `with engine.reuse_encodings():`")
        by_shape: dict[tuple, dict] = {}
        for clip, mask in clips:
            video = self._masked(clip, mask)
            by_shape.setdefault(tuple(video.shape), {})[_clip_key(video)] = video
        for videos in by_shape.values():
            todo = [(k, v) for k, v in videos.items() if k not in self._memo]
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                ids = self.visual.encode(torch.cat([v for _, v in chunk])).cpu()
                for (key, _), row in zip(chunk, ids, strict=True):
                    self._memo[key] = row[None]

    @contextlib.contextmanager
    def decode_threads(self) -> Iterator[None]:
        """One CPU thread while a small model samples token by token.

        Each step of a tiny model is a few small matrix-vector products: threads only add
        synchronisation, and on a busy 2-core machine the default two threads made a 17x64x64
        text-to-video sample take 26.5 s instead of 0.48 s. Models of more than
        ``SMALL_MODEL`` parameters, and CUDA, keep the process's setting.
        """
        device = next(self.lm.parameters()).device
        small = self.lm.num_parameters() < SMALL_MODEL
        before = torch.get_num_threads()
        if device.type == "cpu" and small and before > 1:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    @contextlib.contextmanager
    def reuse_encodings(self) -> Iterator[None]:
        """Encode each distinct clip once while the block runs (for tokenizing datasets)."""
        self._memo = {}
        try:
            yield
        finally:
            self._memo = None

    @torch.no_grad()
    def encode_audio(self, wav: torch.Tensor, span: Any) -> torch.Tensor:
        """(samples,) → (1, levels × frames) ids, cut to the span's latent frames."""
        levels, frames = span.shape
        hop = self.audio_spec.hop_length
        need = frames * hop
        wav = wav.reshape(-1)
        if wav.shape[0] < need:
            wav = torch.nn.functional.pad(wav, (0, need - wav.shape[0]))
        ids = self.audio.encode(wav[:need].reshape(1, 1, -1).to(_device(self.audio))).cpu()
        if ids.shape[1] != span.length:
            raise LayoutError(
                f"the audio tokenizer gave {ids.shape[1]} ids for {frames} frames, the layout "
                f"holds {span.length}"
            )
        return ids

    def encode_example(self, example: Any) -> EncodedExample:
        """A task's training example as the LM's tokens (for the LM trainer)."""
        spec = self.registry.task(example.task)
        conditions = example.conditions
        frames = _video_frames(spec, conditions)
        layout = self.layout(spec, example.format, conditions.present(), frames)
        content, text, mask = self.encode_conditions(layout, conditions)
        if layout.has("visual_out"):
            content["visual_out"] = self.encode_video(example.video)
        if layout.has("audio_out"):
            content["audio_out"] = self.encode_audio(example.audio, layout.span("audio_out"))
        tokens = layout.fill(content)[0]
        return EncodedExample(
            example.task,
            layout,
            tokens,
            None if text is None else text[0],
            None if mask is None else mask[0],
        )

    def build_example(self, task: str, source: Any, fmt: str | Format, seed: int) -> Any:
        """A task's training example from a source, drawn with ``random.Random(seed)``."""
        behaviour = self.task(task)
        return behaviour.build_example(
            source, self.pick_format(behaviour.spec, fmt), random.Random(seed)
        )

    # ------------------------------------------------------------------ generation

    def check_inputs(self, task: str, inputs: dict[str, Any]) -> Any:
        """The task, after checking the inputs' names against it and the bundle (no file read)."""
        behaviour = self.task(task)
        missing = self._servable(behaviour.spec)
        if missing is not None:
            raise ConfigError("task", task, f"a task this bundle can run: {task} needs {missing}")
        behaviour.check_inputs({k: v for k, v in inputs.items() if v is not None})
        return behaviour

    @torch.inference_mode()
    def generate(
        self,
        task: str,
        *,
        format: str | Format | None = None,
        cfg_scale: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        num_samples: int = 1,
        preview: PreviewFn | None = None,
        progress: bool = False,
        superres: str | bool | None = None,
        superres_options: dict[str, Any] | None = None,
        **inputs: Any,
    ) -> GenerationResult:
        """Generate ``num_samples`` outputs of ``task`` from ``inputs`` (``text``, ``image``,
        ``video``, ``audio``, ``mask``, ...: paths or tensors, as the task lists them).

        ``preview(frames, k)`` is called each time a latent frame of the video is complete,
        with the frames decoded so far (the tokenizer is causal: they equal the final ones).

        ``cfg_scale``, ``temperature``, ``top_k``, ``top_p``: None takes the bundle's default
        for the task (:meth:`sampling_for`); the result's ``sampling`` holds what was used.

        ``superres``: a refiner this bundle holds (``True``: ``"superres"``) run on the video
        output, with the text input as its text and ``superres_options`` (e.g. ``steps``,
        ``text_scale``, ``lr_scale``); the result's video is then the refined one.
        """
        from videopoet.core.generation import droppable_conditions
        from videopoet.core.generation import generate as sample
        from videopoet.tasks.base import TaskOutput

        if num_samples < 1:
            raise ConfigError("num_samples", num_samples, "at least 1")
        timings: dict[str, float] = {}
        began = time.perf_counter()
        behaviour = self.check_inputs(task, inputs)
        spec = behaviour.spec
        refiner = self._superres_name(superres, spec)
        sampling = self.sampling_for(
            task, cfg_scale=cfg_scale, temperature=temperature, top_k=top_k, top_p=top_p
        )
        fmt = self.pick_format(spec, format)
        self.layout(spec, fmt)  # the declared layout must fit before any file is read
        conditions, layout = self._prepare_call(behaviour, fmt, inputs)
        if cfg_scale is None and not droppable_conditions(layout):
            sampling["cfg_scale"] = 1.0  # the bundle's guidance has nothing to drop here
        timings["prepare_s"] = time.perf_counter() - began

        began = time.perf_counter()
        content, text, mask = self.encode_conditions(layout, conditions, num_samples)
        timings["encode_s"] = time.perf_counter() - began

        began = time.perf_counter()
        hook = self._preview_hook(layout, preview) if preview is not None else None
        with self.decode_threads():
            ids = sample(
                self.lm,
                layout,
                self.vocab,
                content=content,
                text_embeddings=text,
                text_mask=mask,
                batch_size=num_samples,
                **sampling,
                seed=seed,
                progress=progress,
                on_token=hook,
            )
        timings["sample_s"] = time.perf_counter() - began

        began = time.perf_counter()
        spans = layout.split(ids.cpu())
        video = audio = None
        if "visual_out" in spans:
            video = self.decode_video(spans["visual_out"], layout.span("visual_out").shape)
        if "audio_out" in spans:
            audio = self.decode_audio(spans["audio_out"], fmt.seconds)
        output = TaskOutput(video, audio, FPS, self._sample_rate)
        output = behaviour.to_media(output, conditions)
        timings["decode_s"] = time.perf_counter() - began
        if refiner is not None and output.video is not None:
            began = time.perf_counter()
            text = inputs.get("text") if isinstance(inputs.get("text"), str) else None
            refined = self.refine(
                refiner, output.video, text=text, seed=seed, **(superres_options or {})
            )
            output = TaskOutput(refined, output.audio, output.fps, output.sample_rate)
            timings["superres_s"] = time.perf_counter() - began
        return GenerationResult(
            spec.name,
            fmt,
            output.video,
            output.audio,
            ids.cpu(),
            layout,
            output.fps,
            output.sample_rate,
            timings,
            sampling,
        )

    @torch.no_grad()
    def decode_video(self, ids: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        return self.visual.decode(ids.to(_device(self.visual)), tuple(shape)).float().cpu()

    @torch.no_grad()
    def decode_audio(self, ids: torch.Tensor, seconds: float) -> torch.Tensor:
        """(B, S) exactly ``seconds`` long: the tokenizer's whole frames, zero-padded at the end
        to the clip's length (under one frame, 20 ms at 50 Hz)."""
        wav = self.audio.decode(ids.to(_device(self.audio))).float().cpu().reshape(ids.shape[0], -1)
        need = round(seconds * self.audio_spec.sample_rate)
        if wav.shape[1] < need:
            wav = torch.nn.functional.pad(wav, (0, need - wav.shape[1]))
        return wav[:, :need].clamp(-1, 1)

    def _preview_hook(self, layout: Layout, preview: PreviewFn) -> Any:
        if not layout.has("visual_out"):
            return None
        span = layout.span("visual_out")
        t, h, w = span.shape
        start = span.start - layout.prefix_length
        per_frame = h * w

        def on_token(step: int, ids: torch.Tensor) -> None:
            done = step + 1 - start
            if done <= 0 or done > span.length or done % per_frame:
                return
            k = done // per_frame
            local = ids[:, start : start + done].cpu() - span.ranges[0][0]
            preview(self.decode_video(local, (k, h, w)), k)

        return on_token

    def _superres_name(self, superres: str | bool | None, spec: TaskSpec) -> str | None:
        """The refiner ``generate(superres=...)`` asks for, checked before any work."""
        if superres is None or superres is False:
            return None
        name = "superres" if superres is True else str(superres)
        if spec.target.visual is None:
            raise ConfigError("superres", name, f"no refiner: task {spec.name} makes no video")
        if name not in self.refiners:
            held = ", ".join(sorted(self.refiners)) or "none"
            raise ConfigError(
                "superres", name, f"a refiner this bundle holds ({held}); videopoet add-refiner"
            )
        return name

    def refine(
        self,
        name: str,
        video: torch.Tensor,
        *,
        text: str | None = None,
        seed: int | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """Run the loaded refiner ``name`` on ``video`` (B, 3, T, H, W) in [-1, 1] and return
        its output video (for super-resolution, larger frames), same layout and range."""
        if name not in self.registry.refiners:
            known = ", ".join(sorted(self.registry.refiners)) or "none installed"
            raise ConfigError("refiner", name, f"a registered refiner ({known})")
        if name not in self.refiners:
            held = ", ".join(sorted(self.refiners)) or "none"
            raise ConfigError(
                "refiner", name, f"a refiner this bundle holds ({held}); train one first"
            )
        return self.refiners[name].refine(self, video, text=text, seed=seed, **options)

    def extend(
        self,
        video: Any,
        times: int = 1,
        *,
        condition_frames: int = 5,
        format: str | Format | None = None,
        seed: int | None = None,
        progress: bool = False,
        **sampling: Any,
    ) -> torch.Tensor:
        """Longer video by frame prediction (paper 7.2): condition on the last
        ``condition_frames`` frames, keep what follows them, repeat ``times`` times.

        ``video``: (3, T, H, W) in [-1, 1] or a file path. Returns (3, T + times × (F - c), H, W)
        whose first T frames are the input. ``sampling``: ``generate``'s keywords (None: the
        bundle's defaults for ``fp``).
        """
        behaviour = self.task("fp")
        fmt = self.pick_format(behaviour.spec, format)
        if times < 1:
            raise ConfigError("times", times, "at least 1")
        if isinstance(video, torch.Tensor):
            clip = behaviour._check_tensor("video", video, fmt, condition_frames)
        else:
            from videopoet.data.media import frames_to_tensor, read_frames

            behaviour.load_video("video", video, fmt, condition_frames)  # checks the file
            clip = frames_to_tensor(read_frames(video, size=(fmt.height, fmt.width)))
        out = clip
        for round_ in range(times):
            tail = out[:, -condition_frames:]
            result = self.generate(
                "fp",
                video=tail,
                condition_frames=condition_frames,
                format=fmt,
                seed=None if seed is None else seed + round_,
                progress=progress,
                **sampling,
            )
            out = torch.cat([out, result.video[0, :, condition_frames:]], dim=1)
        return out


# ---------------------------------------------------------------------------- loading parts


def _video_frames(spec: TaskSpec, conditions: Any) -> dict[str, int]:
    """Frames of each video input the conditions hold (they set the layout's spans)."""
    return {
        v.name: conditions.visual[v.name].shape[1]
        for v in spec.prefix.visual_inputs
        if v.kind != "image" and v.name in conditions.visual
    }


def _clip_key(video: torch.Tensor) -> tuple:
    return tuple(video.shape), hashlib.sha1(video.cpu().numpy().tobytes()).hexdigest()


def _device(module: Any) -> torch.device:
    return next(module.parameters()).device


def preset_formats(preset: str) -> tuple[str, ...]:
    return DEMO_FORMATS if preset == "tiny" else PAPER_FORMATS


def ordered_tasks(registry: Any) -> list[TaskSpec]:
    """Built-in tasks first, then third-party ones, each sorted by token (stable ids)."""

    def order(task: TaskSpec) -> tuple[bool, str]:
        return (registry.owner("tasks", task.name) != "videopoet", task.token_name)

    return sorted(registry.tasks.values(), key=order)


def load_tokenizer(
    directory: str | Path, modality: str, registry: Any, device: str | torch.device = "cpu"
) -> tuple[Any, Any]:
    """(network, registered declaration) from a saved tokenizer folder: its config names the
    registered declaration, whose factory builds the network; the weights load into it."""
    directory = Path(directory)
    config_path, config = _read_saved_config(directory, f"{modality}_tokenizer")
    name = config.get("name")
    if name not in registry.tokenizers:
        raise ConfigError(
            f"{config_path}: name",
            name,
            f"a registered tokenizer ({', '.join(registry.tokenizers)})",
        )
    spec = registry.tokenizer(name)
    if spec.modality != modality:
        raise ConfigError(
            f"{modality}_tokenizer",
            str(directory),
            f"a {modality} tokenizer; this folder holds {name}, a {spec.modality} tokenizer",
        )
    return _build_with_weights(spec.factory, config, config_path, device), spec


def load_refiner(
    directory: str | Path, name: str, registry: Any, device: str | torch.device = "cpu"
) -> Any:
    """A bundle's refiner from ``refiners/NAME/``: its config names the registered refiner,
    whose factory builds it from the config's other keys; the weights load into it."""
    directory = Path(directory)
    config_path, config = _read_saved_config(directory, f"refiners.{name}")
    if config.get("name") != name:
        raise ConfigError(f"{config_path}: name", config.get("name"), f"{name} (its folder)")
    if name not in registry.refiners:
        known = ", ".join(sorted(registry.refiners)) or "none installed"
        raise ConfigError(f"{config_path}: name", name, f"a registered refiner ({known})")
    spec = registry.refiner(name)
    if spec.factory is None:
        raise ConfigError(f"refiners.{name}", name, "a refiner that declares a factory")
    return _build_with_weights(spec.factory, config, config_path, device)


def _read_saved_config(directory: Path, field: str) -> tuple[Path, dict[str, Any]]:
    """``directory/config.json`` of a saved network, every problem named by path."""
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ConfigError(field, str(directory), "a folder with config.json")
    try:
        return config_path, dict(load_json(config_path))
    except Exception as exc:  # noqa: BLE001 - reported by path
        raise ConfigError(str(config_path), "unreadable", f"valid JSON ({exc})") from None


def _build_with_weights(
    factory: Any, config: dict[str, Any], config_path: Path, device: str | torch.device
) -> Any:
    """The network ``factory`` builds from the config's options, with the weights beside it."""
    name = config.get("name")
    options = {k: v for k, v in config.items() if k not in ("kind", "name")}
    try:
        network = factory(**options)
    except VideoPoetError:
        raise
    except Exception as exc:  # noqa: BLE001 - a config the factory refuses, named by path
        raise ConfigError(
            str(config_path), sorted(options), f"options {name} takes ({exc})"
        ) from None
    weights = config_path.parent / "model.safetensors"
    try:
        network.load_state_dict(load_tensors(weights, device))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[:3]
        raise ConfigError(str(weights), "weights", f"the weights of {name}: {first}") from None
    return network.to(device).eval()


def build_text_encoder(record: TextEncoderRecord, registry: Any) -> Any:
    encoder = registry.text_encoder(record.name).factory(**record.options)
    if encoder.identity != record.identity:
        raise ConfigError(
            "text_encoder",
            encoder.identity,
            f"{record.identity} (the encoder this bundle was trained with)",
        )
    return encoder
