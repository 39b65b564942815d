"""Running a validated chain: one folder per step, written atomically, and ``run.json``.

Each step's outputs are handed on exactly as they are saved (8-bit frames, float sound), so a
chain gives the same media whether an earlier step ran now or was skipped. A step is skipped
when its folder holds a ``step.json`` whose key matches: a content hash of the step's kind,
task or refiner, options, inputs (file contents; an earlier step's output hash; literals) and
the bundle's identity. ``force=True`` runs every step.

A recipe of pipeline stages (``stage:`` steps, which make a bundle instead of reading one) is
run by :class:`videopoet.recipes.stage_runner.StageRunner`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from videopoet.core.errors import ConfigError, VideoPoetError
from videopoet.core.generation_config import SAMPLING_KEYS
from videopoet.core.serialization import file_sha256
from videopoet.recipes.errors import RecipeError, StepError
from videopoet.recipes.loader import LoadedRecipe, load_recipe
from videopoet.recipes.schema import StepRef
from videopoet.recipes.validate import (
    CONDITION_FRAMES,
    FileInput,
    Literal,
    Plan,
    PlannedStep,
    check_with_engine,
    describe_input,
    plan,
)

#: bump when the meaning of a key changes, so old step folders are not reused
KEY_VERSION = 1
MEDIA_NAME, STEP_NAME, RUN_NAME = "media.safetensors", "step.json", "run.json"


@dataclass
class StepResult:
    """One step's media and where they were written.

    ``video`` (3, T, H, W) in [-1, 1] (T = 1 for an image), ``audio`` (samples,) in [-1, 1],
    ``tokens`` the generated target ids (task steps), ``seed`` the seed used, ``sampling``
    the sampling settings used (the step's options over the bundle's defaults; task and
    ``repeat`` steps).
    """

    name: str
    kind: str
    target: str
    folder: Path
    files: list[Path]
    video: torch.Tensor | None
    audio: torch.Tensor | None
    tokens: torch.Tensor | None
    fps: float
    sample_rate: int
    options: dict[str, Any]
    seed: int | None
    format: str | None
    timings: dict[str, float]
    skipped: bool
    key: str
    outputs_sha256: str
    sampling: dict[str, Any] | None = None

    def output(self, name: str) -> torch.Tensor:
        """``video``, ``image`` (first frame, (3, 1, H, W)), ``last_frame`` or ``audio``."""
        if name == "audio":
            if self.audio is None:
                raise ConfigError("output", name, f"an output step {self.name} made")
            return self.audio
        if self.video is None:
            raise ConfigError("output", name, f"an output step {self.name} made")
        if name == "image":
            return self.video[:, :1]
        if name == "last_frame":
            return self.video[:, -1:]
        return self.video

    def row(self) -> dict[str, Any]:
        """The step in ``videopoet run``'s JSON summary."""
        return {
            "name": self.name,
            "kind": self.kind,
            "target": self.target,
            "skipped": self.skipped,
            "files": [str(f) for f in self.files],
            "seconds": self.seconds,
        }

    @property
    def seconds(self) -> float | None:
        if self.video is not None and self.video.shape[1] > 1:
            return self.video.shape[1] / self.fps
        if self.audio is not None:
            return self.audio.shape[0] / self.sample_rate
        return None


@dataclass
class RecipeResult:
    """What :func:`run_recipe` returns: each step's result, in order, and the run folder
    (a :class:`StepResult` per step, or a ``StageResult`` per stage of a recipe of stages)."""

    name: str
    out: Path
    run_json: Path
    steps: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> Any:
        return list(self.steps.values())[-1]

    def summary(self) -> dict[str, Any]:
        return {
            "recipe": self.name,
            "out": str(self.out),
            "run_json": str(self.run_json),
            "steps": [s.row() for s in self.steps.values()],
        }


# ---------------------------------------------------------------------------- entry points


def plan_recipe(
    recipe: str | Path | dict[str, Any],
    overrides: list[str] | None = None,
    *,
    engine: Any = None,
    device: str = "cpu",
    allow: list[str | Path] | tuple = (),
    registry: Any = None,
    base_dir: str | Path | None = None,
    check_engine: bool = True,
) -> Plan:
    """Load and validate a recipe and, with ``check_engine``, check it against its bundle
    (loaded unless ``engine`` is given): what ``videopoet run --dry-run`` prints. A recipe of
    stages has no bundle to check against."""
    optional = ("bundle",) if engine is not None else ()
    loaded = load_recipe(recipe, overrides, allow=allow, base_dir=base_dir, optional=optional)
    registry = _registry(engine, registry)
    planned = plan(loaded, registry, need_bundle=engine is None)
    if check_engine and not planned.stages:
        engine = engine if engine is not None else _load_engine(planned, device, registry)
        check_with_engine(planned, engine)
    return planned


def run_recipe(
    recipe: str | Path | dict[str, Any],
    overrides: list[str] | None = None,
    *,
    out: str | Path | None = None,
    force: bool = False,
    engine: Any = None,
    device: str = "cpu",
    progress: bool = False,
    allow: list[str | Path] | tuple = (),
    registry: Any = None,
    base_dir: str | Path | None = None,
) -> RecipeResult:
    """Run a recipe (a YAML path, a built-in name or a dict) with ``key=value`` overrides.

    The whole chain is validated first; the bundle is loaded (unless ``engine`` is given) only
    when a step has to run. Outputs go to ``out`` (default ``outputs/<recipe name>``), one
    folder per step, with ``run.json``; unchanged steps are skipped unless ``force``. A recipe
    of stages needs no bundle: its finished stages are skipped, an interrupted one resumes,
    and ``force`` starts every stage over.
    """
    optional = ("bundle",) if engine is not None else ()
    loaded = load_recipe(recipe, overrides, allow=allow, base_dir=base_dir, optional=optional)
    registry = _registry(engine, registry)
    planned = plan(loaded, registry, need_bundle=engine is None)
    folder = Path(out) if out is not None else Path("outputs") / loaded.recipe.name
    if planned.stages:
        from videopoet.recipes.stage_runner import StageRunner

        if engine is not None:
            raise ConfigError("engine", "given", "none: a recipe of stages makes its own bundle")
        return StageRunner(planned, folder, force, progress).run()
    return _Runner(planned, folder, force, engine, device, progress, registry).run()


def _registry(engine: Any, registry: Any) -> Any:
    if engine is not None:
        return engine.registry
    if registry is not None:
        return registry
    from videopoet.core.plugins import get_registry

    return get_registry()


def _load_engine(planned: Plan, device: str, registry: Any) -> Any:
    from videopoet.core.engine import Engine

    assert planned.bundle is not None  # plan() refused a recipe without one
    return Engine.from_pretrained(planned.bundle, device=device, registry=registry)


# ---------------------------------------------------------------------------- identity


def bundle_identity(path: Path) -> str:
    """A folder by the content of its files, less its prose (``*.md``: model cards), so a
    fresh clone, a copy or a rewrite with the same weights keeps the identity (modification
    times do not survive a checkout)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix != ".md"):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:  # streamed into one digest: keys of runs stay valid
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def engine_identity(engine: Any) -> str:
    """A loaded engine by content: its networks' weights, text encoder and formats."""
    digest = hashlib.sha256()
    for label in ("lm", "visual", "audio"):
        module = getattr(engine, label, None)
        if module is None:
            continue
        for key, value in sorted(module.state_dict().items()):
            digest.update(f"{label}.{key}:{value.dtype}:{tuple(value.shape)}".encode())
            digest.update(_tensor_bytes(value))
    record = getattr(engine, "text_record", None)
    digest.update(json.dumps(record.model_dump() if record else None, sort_keys=True).encode())
    generation = getattr(engine, "generation", None)  # the sampling defaults None options take
    shown = generation.model_dump(mode="json") if generation is not None else None
    digest.update(json.dumps(shown, sort_keys=True).encode())
    digest.update(" ".join(str(f) for f in engine.formats).encode())
    return digest.hexdigest()


def _tensor_bytes(value: torch.Tensor) -> bytes:
    flat = value.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def _file_sha(path: Path, cache: dict[Path, str]) -> str:
    if path not in cache:
        cache[path] = file_sha256(path)
    return cache[path]


def _media_sha(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(tensors):
        value = tensors[key]
        digest.update(f"{key}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(_tensor_bytes(value))
    return digest.hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------- the runner


class _Runner:
    def __init__(
        self,
        planned: Plan,
        out: Path,
        force: bool,
        engine: Any,
        device: str,
        progress: bool,
        registry: Any,
    ) -> None:
        self.plan, self.out, self.force = planned, out, force
        self._engine, self.device, self.progress, self.registry = engine, device, progress, registry
        self.loaded: LoadedRecipe = planned.loaded
        self.results: dict[str, StepResult] = {}
        self.records: list[dict[str, Any]] = []
        self.hashes: dict[Path, str] = {}
        self.started = _now()
        if engine is not None:
            self.identity = engine_identity(engine)
        else:
            assert planned.bundle is not None
            self.identity = bundle_identity(planned.bundle)

    # -------------------------------------------------------------- engine, lazily

    @property
    def engine(self) -> Any:
        """The engine, loaded and the whole plan checked against it before any step runs."""
        if self._engine is None:
            self._engine = _load_engine(self.plan, self.device, self.registry)
        if not self.plan.checked_with_engine:
            check_with_engine(self.plan, self._engine)
        return self._engine

    # -------------------------------------------------------------- run

    def run(self) -> RecipeResult:
        from tqdm.auto import tqdm

        name = self.plan.name
        result = RecipeResult(name, self.out, self.out / RUN_NAME)
        bar = tqdm(
            total=len(self.plan.steps),
            desc=f"recipe {name}",
            unit="step",
            disable=not self.progress,
        )
        ran = False
        try:
            for step in self.plan.steps:
                bar.set_postfix_str(step.name)
                key, inputs = self._key(step)
                done = None if self.force else self._reuse(step, key)
                if done is None:
                    done = self._run_step(step, key)
                self.results[step.name] = result.steps[step.name] = done
                self.records.append(self._record(step, done, inputs))
                ran = ran or not done.skipped
                if ran:  # nothing is written before the first step runs (or at the end)
                    self._write_run("running")
                bar.update(1)
        except RecipeError:  # the plan failed its check against the bundle: nothing ran
            raise
        except BaseException as exc:
            failed = next((s.name for s in self.plan.steps if s.name not in self.results), None)
            self._write_run("failed", failed, exc)
            raise
        finally:
            bar.close()
        self._write_run("ok")
        return result

    def _key(self, step: PlannedStep) -> tuple[str, dict[str, Any]]:
        inputs: dict[str, Any] = {}
        for key, value in step.inputs.items():
            described = describe_input(value)
            if isinstance(value, FileInput):
                described["sha256"] = _file_sha(value.path, self.hashes)
            elif isinstance(value, StepRef):
                described["sha256"] = self.results[value.step].outputs_sha256
            inputs[key] = described
        payload = {
            "version": KEY_VERSION,
            "bundle": self.identity,
            "kind": step.kind,
            "target": step.target,
            "repeat": step.repeat,
            "options": step.options,
            "carried": step.carried,
            "inputs": {k: {x: y for x, y in v.items() if x != "file"} for k, v in inputs.items()},
        }
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest(), inputs

    def _reuse(self, step: PlannedStep, key: str) -> StepResult | None:
        """The step's earlier result when its folder holds one made with the same key."""
        from videopoet.core.serialization import load_json, load_tensors

        folder = self.out / step.name
        try:
            record = load_json(folder / STEP_NAME)
            if not isinstance(record, dict) or record.get("key") != key:
                return None
            tensors = load_tensors(folder / MEDIA_NAME)
        except ConfigError:
            return None
        files = [folder / f for f in record.get("files", [])]
        if not all(f.is_file() for f in files):
            return None
        return self._result(step, key, folder, files, tensors, record, skipped=True)

    def _result(
        self,
        step: PlannedStep,
        key: str,
        folder: Path,
        files: list[Path],
        tensors: dict[str, torch.Tensor],
        record: dict[str, Any],
        skipped: bool,
    ) -> StepResult:
        from videopoet.data.media import frames_to_tensor

        frames = tensors.get("frames")
        return StepResult(
            name=step.name,
            kind=step.kind,
            target=step.target,
            folder=folder,
            files=files,
            video=frames_to_tensor(frames) if frames is not None else None,
            audio=tensors.get("audio"),
            tokens=tensors.get("tokens"),
            fps=float(record.get("fps", 8.0)),
            sample_rate=int(record.get("sample_rate", 16_000)),
            options=dict(step.options),
            seed=record.get("seed"),
            format=record.get("format"),
            timings=dict(record.get("timings_s", {})),
            skipped=skipped,
            key=key,
            outputs_sha256=_media_sha(tensors),
            sampling=record.get("sampling"),
        )

    def _run_step(self, step: PlannedStep, key: str) -> StepResult:
        from videopoet.core.serialization import save_json, save_tensors, write_atomic_dir
        from videopoet.data.media import tensor_to_frames, write_mp4, write_png, write_wav

        engine = self.engine  # loads and checks the whole plan before the first step runs
        seed = step.options.get("seed")
        if seed is None:
            seed = random.SystemRandom().randrange(2**31)
        began = time.perf_counter()
        sampling = None
        try:
            if step.kind != "refiner":
                given = {k: step.options.get(k) for k in SAMPLING_KEYS}
                sampling = engine.sampling_for(step.target, **given)
            made = self._execute(step, engine, seed)
        except (VideoPoetError, ValueError) as exc:
            raise StepError(step.name, f"{step.kind} {step.target}", exc) from exc
        video, audio, tokens, timings = made
        timings["total_s"] = time.perf_counter() - began

        fps = 8.0
        sample_rate = engine.audio_spec.sample_rate if engine.audio is not None else 16_000
        tensors: dict[str, torch.Tensor] = {}
        if video is not None:
            tensors["frames"] = tensor_to_frames(video)  # 8-bit, exactly as handed on
        if audio is not None:
            tensors["audio"] = audio.detach().float().reshape(-1).clamp(-1, 1).contiguous()
        if tokens is not None:
            tensors["tokens"] = tokens.detach().to(torch.int64).reshape(-1).contiguous()
        names: list[str] = []
        if video is not None:
            names.append("image.png" if video.shape[1] == 1 else "video.mp4")
        if audio is not None:
            names.append("audio.wav")
        record = {
            "name": step.name,
            "key": key,
            "seed": seed,
            "format": str(step.format) if step.format is not None else None,
            "sampling": sampling,
            "fps": fps,
            "sample_rate": sample_rate,
            "files": names,
            "timings_s": {k: round(v, 4) for k, v in timings.items()},
            "written": _now(),
        }

        def fill(tmp: Path) -> None:
            frames = tensors.get("frames")
            sound = tensors.get("audio")
            if frames is not None and frames.shape[0] == 1:
                write_png(tmp / "image.png", frames[0])
            elif frames is not None:
                write_mp4(tmp / "video.mp4", frames, fps, sound, sample_rate)
            if sound is not None:
                write_wav(tmp / "audio.wav", sound, sample_rate)
            save_tensors(tmp / MEDIA_NAME, tensors, {"fps": fps, "sample_rate": sample_rate})
            save_json(tmp / STEP_NAME, record)

        folder = write_atomic_dir(self.out / step.name, fill)
        files = [folder / n for n in names]
        return self._result(step, key, folder, files, tensors, record, skipped=False)

    # -------------------------------------------------------------- executing one step

    def _execute(
        self, step: PlannedStep, engine: Any, seed: int
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, dict[str, float]]:
        sampling = {k: step.options[k] for k in SAMPLING_KEYS if k in step.options}
        if step.kind == "refiner":
            return self._refine(step, engine, seed)
        fmt = step.format
        if step.kind == "repeat":
            source = self._value(step.inputs["video"], fmt)
            literal = step.inputs.get("condition_frames")
            frames = int(literal.value) if isinstance(literal, Literal) else CONDITION_FRAMES
            began = time.perf_counter()
            video = engine.extend(
                source,
                int(step.repeat or 1),
                condition_frames=frames,
                format=fmt,
                seed=seed,
                progress=self.progress,
                **sampling,
            )
            return video, None, None, {"extend_s": time.perf_counter() - began}
        inputs = {k: self._value(v, fmt) for k, v in step.inputs.items()}
        result = engine.generate(
            step.target, format=fmt, seed=seed, progress=self.progress, **sampling, **inputs
        )
        video = result.video[0] if result.video is not None else None
        audio = result.audio[0] if result.audio is not None else None
        if "video" in step.carried:
            frames = (step.shape.get("video") or [fmt.frames])[0]
            video = self._visual(step.inputs[step.carried["video"]], fmt)[:, :frames]
        if "audio" in step.carried:
            audio = self._sound(step.inputs[step.carried["audio"]], engine)
            if video is not None and video.shape[1] > 1:
                rate = engine.audio_spec.sample_rate if engine.audio is not None else 16_000
                audio = audio[: round(video.shape[1] / result.fps * rate)]
        return video, audio, result.tokens[0], dict(result.timings)

    def _refine(
        self, step: PlannedStep, engine: Any, seed: int
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, dict[str, float]]:
        source = step.inputs["video"]
        video = self._visual(source, None)
        text = step.inputs.get("text")
        options = {k: v for k, v in step.options.items() if k != "seed"}
        if "progress" not in options and _takes(engine.refiners.get(step.target), "progress"):
            options["progress"] = self.progress
        began = time.perf_counter()
        out = engine.refine(
            step.target,
            video[None],
            text=text.value if isinstance(text, Literal) else None,
            seed=seed,
            **options,
        )
        if not isinstance(out, torch.Tensor) or out.dim() != 5 or out.shape[:2] != (1, 3):
            shown = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError("refine", shown, "a (1, 3, T, H, W) video from the refiner")
        audio = None
        if "audio" in step.carried and isinstance(source, StepRef):
            audio = self.results[source.step].audio
        video = out[0].detach().float().cpu().clamp(-1, 1)
        return video, audio, None, {"refine_s": time.perf_counter() - began}

    def _value(self, value: FileInput | Literal | StepRef, fmt: Any) -> Any:
        """An input as ``engine.generate`` takes it: a path, a literal or a tensor."""
        if isinstance(value, FileInput):
            return str(value.path)
        if isinstance(value, Literal):
            return value.value
        tensor = self.results[value.step].output(value.output)
        if value.output == "audio":
            return tensor
        return _fit(tensor, fmt)

    def _visual(self, value: FileInput | Literal | StepRef, fmt: Any) -> torch.Tensor:
        """(3, T, H, W) in [-1, 1] from a step's output or a file (at ``fmt``'s size)."""
        from videopoet.data.media import frames_to_tensor, read_frames

        if isinstance(value, StepRef):
            return _fit(self.results[value.step].output(value.output), fmt)
        assert isinstance(value, FileInput)
        size = (fmt.height, fmt.width) if fmt is not None else None
        return frames_to_tensor(read_frames(value.path, size=size))

    def _sound(self, value: FileInput | Literal | StepRef, engine: Any) -> torch.Tensor:
        from videopoet.data.media import read_audio

        if isinstance(value, StepRef):
            return self.results[value.step].output("audio")
        assert isinstance(value, FileInput)
        rate = engine.audio_spec.sample_rate if engine.audio is not None else 16_000
        return read_audio(value.path, sample_rate=rate).reshape(-1)

    # -------------------------------------------------------------- run.json

    def _record(self, step: PlannedStep, done: StepResult, inputs: dict) -> dict[str, Any]:
        outputs: dict[str, Any] = {}
        if done.video is not None:
            outputs["video"] = list(done.video.shape)
        if done.audio is not None:
            outputs["audio_samples"] = int(done.audio.shape[0])
        record: dict[str, Any] = {"name": step.name, "index": step.index, "kind": step.kind}
        record[step.kind] = step.target
        if step.kind == "repeat":
            record["repeat"] = step.repeat
        record |= {
            "inputs": inputs,
            "options": step.options,
            "seed": done.seed,
            "sampling": done.sampling,
            "format": done.format,
            "skipped": done.skipped,
            "folder": str(done.folder),
            "files": [str(f) for f in done.files],
            "outputs": outputs,
            "seconds": done.seconds,
            "tokens": int(done.tokens.numel()) if done.tokens is not None else None,
            "key": done.key,
            "outputs_sha256": done.outputs_sha256,
            "timings_s": done.timings,
        }
        return record

    def _write_run(
        self, status: str, failed: str | None = None, error: BaseException | None = None
    ) -> None:
        fields = {
            "bundle": str(self.plan.bundle) if self.plan.bundle is not None else None,
            "bundle_identity": self.identity,
        }
        write_run_record(
            self.out / RUN_NAME,
            self.plan,
            fields,
            self.records,
            status=status,
            started=self.started,
            forced=self.force,
            failed=failed,
            error=error,
        )


def write_run_record(
    path: Path,
    plan: Any,
    fields: dict[str, Any],
    steps: list[dict[str, Any]],
    *,
    status: str,
    started: str,
    forced: bool,
    failed: str | None = None,
    error: BaseException | None = None,
) -> None:
    """``run.json`` of a recipe run (chain or stages): the recipe, ``fields`` particular to the
    kind of run, the status and the steps' records, written atomically."""
    from videopoet import __version__
    from videopoet.core.serialization import save_json

    loaded = plan.loaded
    data: dict[str, Any] = {
        "recipe": loaded.recipe.name,
        "description": loaded.recipe.description,
        "source": str(loaded.source),
        "overrides": loaded.overrides,
        **fields,
        "forced": forced,
        "status": status,
        "started": started,
        "finished": _now() if status != "running" else None,
        "videopoet_version": __version__,
        "order": [r["name"] for r in steps],
        "steps": steps,
        "plan": plan.describe(),
    }
    if failed is not None:
        data["failed_step"] = failed
    if error is not None:
        data["error"] = f"{type(error).__name__}: {error}"
    save_json(path, json.loads(json.dumps(data, default=str)))


def _takes(refiner: Any, name: str) -> bool:
    """Whether ``refiner.refine`` has a parameter ``name`` (not only ``**options``)."""
    try:
        return name in inspect.signature(refiner.refine).parameters
    except (AttributeError, TypeError, ValueError):
        return False


def _fit(tensor: torch.Tensor, fmt: Any) -> torch.Tensor:
    """A (3, T, H, W) clip resized (bilinear, antialiased) to ``fmt``'s frame size."""
    if fmt is None or tuple(tensor.shape[-2:]) == (fmt.height, fmt.width):
        return tensor
    frames = torch.nn.functional.interpolate(
        tensor.transpose(0, 1).float(),
        size=(fmt.height, fmt.width),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )
    return frames.transpose(0, 1).clamp(-1, 1).contiguous()
