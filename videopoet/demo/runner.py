"""Run the demo: every case on fresh held-out world samples, bundle beside untrained twin.

:func:`run_demo` loads a bundle, draws for each case its own held-out world samples (indices
from :data:`DEMO_OFFSET`, away from those ``videopoet evaluate`` uses), generates with the
bundle and with an untrained LM of the same config on the same inputs and sampling seeds,
measures both, and writes the gallery folder (``index.html``, ``demo.json``, ``media/``)
atomically: a reader sees the previous gallery or the whole new one.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from videopoet.core.errors import ConfigError, VideoPoetError
from videopoet.data import world
from videopoet.demo.cases import Case, Context, Medium, Outcome, select_cases

#: the demo's held-out samples start here (evaluate uses EVAL_OFFSET + 0 .. a few thousand)
DEMO_OFFSET = world.EVAL_OFFSET + 500_000_000
#: how far a case scans for samples it can use (a2v wants vertical motion), per sample
SCAN = 64
#: world samples per case whose figures are averaged (the first one is shown)
SAMPLES, QUICK_SAMPLES = 3, 1
#: files that mark a folder as a gallery this command may replace
GALLERY_FILES = ("index.html", "demo.json")


@dataclass
class Entry:
    """One case in the gallery: what went in and came out (paths relative to the gallery),
    the preview filmstrip, and each figure for the bundle and the reference."""

    key: str
    title: str
    about: str
    tasks: list[str]
    reference: str
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    reference_outputs: list[dict] = field(default_factory=list)
    filmstrip: str | None = None
    figures: list[dict] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str | None = None


@dataclass
class DemoReport:
    """What :func:`run_demo` did; ``to_json`` is ``demo.json``."""

    out: Path
    bundle: str
    description: str
    parameters: int
    formats: list[str]
    seed: int
    quick: bool
    samples: int
    sampling: dict[str, Any]  # the options given; the bundle's defaults fill in the rest
    entries: list[Entry]
    seconds: float = 0.0
    untrained: bool = True
    notes: list[str] = field(default_factory=list)
    #: the bundle's sampling defaults (its ``generation`` section; both models use them)
    generation: dict[str, Any] | None = None

    @property
    def index(self) -> Path:
        return self.out / "index.html"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"] = str(self.out)
        data["seconds"] = round(self.seconds, 1)
        return data

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        """(case, figure, bundle, reference, better) as text, for printing."""
        out = []
        for entry in self.entries:
            if entry.skipped:
                out.append((entry.key, "skipped", entry.skipped, "", ""))
            for fig in entry.figures:
                out.append(
                    (
                        entry.key,
                        fig["key"],
                        shown(fig["bundle"]),
                        shown(fig["reference"]),
                        fig["better"],
                    )
                )
        return out


def shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


# ---------------------------------------------------------------------------- folders


def check_out(out: Path) -> None:
    """``out`` is new, empty, or an earlier gallery (never a folder of other files)."""
    if out.exists() and not out.is_dir():
        raise ConfigError("out", str(out), "a folder for the gallery; this is a file")
    if out.is_dir() and any(out.iterdir()):
        if not any((out / name).is_file() for name in GALLERY_FILES):
            raise ConfigError(
                "out",
                str(out),
                "a new or empty folder, or an earlier demo gallery (it is replaced whole); "
                "this folder holds other files",
            )


def _write(medium: Medium, folder: Path, stem: str, fps: float, sample_rate: int) -> dict:
    """Write one medium under ``folder / 'media'``; the record holds its relative path."""
    from videopoet.data.media import tensor_to_frames, write_mp4, write_png, write_wav

    record: dict[str, Any] = {"kind": medium.kind, "label": medium.label}
    if medium.kind == "text":
        record["text"] = medium.text
        return record
    media = folder / "media"
    if medium.kind == "audio":
        write_wav(media / f"{stem}.wav", medium.audio, sample_rate)
        record["path"] = f"media/{stem}.wav"
        return record
    video = medium.video if medium.video.dim() == 4 else medium.video[:, None]
    frames = tensor_to_frames(video.float().cpu())
    record.update(width=int(frames.shape[2]), height=int(frames.shape[1]))
    if medium.kind == "image" or frames.shape[0] == 1:
        write_png(media / f"{stem}.png", frames[:1])
        record.update(kind="image", path=f"media/{stem}.png")
    else:
        write_mp4(media / f"{stem}.mp4", frames, fps, medium.audio, sample_rate)
        record.update(path=f"media/{stem}.mp4", frames=int(frames.shape[0]))
        record["sound"] = medium.audio is not None
    return record


# ---------------------------------------------------------------------------- running


def _image_format(engine: Any) -> Any:
    images = [f for f in engine.formats if f.is_image]
    return images[0] if images else None


def draw(case: Case, count: int, start: int, ctx: Context) -> list[world.WorldSample]:
    """The first ``count`` held-out samples from index ``start`` on that ``case`` picks."""
    fmt = ctx.image_fmt if case.image else ctx.fmt
    picked: list[world.WorldSample] = []
    for index in range(start, start + SCAN * count):
        item = world.sample(index, fmt.frames, fmt.height, fmt.width, ctx.world)
        if case.picks(item):
            picked.append(item)
            if len(picked) == count:
                break
    return picked


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    ours, theirs = a.state_dict(), b.state_dict()
    return ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def _mean(values: list[float]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return sum(kept) / len(kept) if kept else None


def _figures(case: Case, ours: list[Outcome], theirs: list[Outcome]) -> list[dict]:
    out = []
    for fig in case.figures:
        mine = [o.values.get(fig.key, math.nan) for o in ours]
        other = [o.values.get(fig.key, math.nan) for o in theirs]
        out.append(
            {
                "key": f"{case.key}_{fig.key}",
                "label": fig.label,
                "better": fig.better,
                "bundle": _mean(mine),
                "reference": _mean(other) if theirs else None,
                "measured": sum(math.isfinite(v) for v in mine),
                "samples": len(mine),
            }
        )
    return out


class Snapshots:
    """The engine's preview callback: keeps each snapshot of the first sample's frames."""

    def __init__(self) -> None:
        self.frames: list[torch.Tensor] = []

    def __call__(self, frames: torch.Tensor, done: int) -> None:
        self.frames.append(frames[0].float().cpu().clone())


def run_case(
    case: Case,
    items: list[world.WorldSample],
    engine: Any,
    reference: Any,
    ctx: Context,
    folder: Path,
    seed: int,
    bar: Any,
) -> Entry:
    """Run ``case`` on ``items`` with both models, write the first sample's media."""
    entry = Entry(case.key, case.title, case.describe(), list(case.tasks), case.reference)
    entry.indices = [item.index for item in items]
    began = time.perf_counter()
    fps, rate = float(world.FPS), ctx.sample_rate
    ours: list[Outcome] = []
    theirs: list[Outcome] = []
    snapshots = Snapshots()
    for n, item in enumerate(items):
        sampling_seed = seed * 1000 + n
        bar.set_postfix_str(case.key)
        preview = snapshots if n == 0 and case.preview else None
        ours.append(case.run(engine, item, sampling_seed, ctx, preview))
        bar.update(1)
        if reference is not None or case.reference != "untrained LM":
            theirs.append(case.run_reference(reference, item, sampling_seed, ctx))
            bar.update(1)
        if n:
            continue
        given = ours[0].inputs if ours[0].inputs is not None else case.inputs(item, ctx)
        entry.inputs = [
            _write(m, folder, f"{case.key}_in{i}", fps, rate) for i, m in enumerate(given)
        ]
        entry.outputs = [
            _write(m, folder, f"{case.key}_out{i}", fps, rate)
            for i, m in enumerate(ours[0].outputs)
        ]
        if theirs:
            entry.reference_outputs = [
                _write(m, folder, f"{case.key}_ref{i}", fps, rate)
                for i, m in enumerate(theirs[0].outputs)
            ]
        if len(snapshots.frames) > 1:
            from videopoet.data.media import tensor_to_frames, write_png
            from videopoet.demo.views import filmstrip

            final = next(m.video for m in ours[0].outputs if m.video is not None)
            strip = filmstrip(snapshots.frames, final.shape[1])
            write_png(
                folder / "media" / f"{case.key}_preview.png", tensor_to_frames(strip[:, None])
            )
            entry.filmstrip = f"media/{case.key}_preview.png"
    entry.figures = _figures(case, ours, theirs)
    entry.seconds = time.perf_counter() - began
    return entry


def run_demo(
    bundle: str | Path,
    out: str | Path = "demo-output",
    *,
    quick: bool = False,
    seed: int = 0,
    samples: int | None = None,
    sampling: dict[str, Any] | None = None,
    untrained: bool = True,
    cases: list[str] | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> DemoReport:
    """Run the demo with the bundle in ``bundle`` and write the gallery to ``out``.

    ``quick``: the reduced set of cases, one sample each (for CI). ``samples``: held-out
    samples per case (figures are their mean; the first is shown). ``seed`` picks the samples
    and the sampling seeds. ``cases``: run only these case keys. ``sampling``:
    ``generate``'s keywords given to every case (a ``cfg_scale`` only to the tasks with a
    condition to drop); the ones not given take the bundle's defaults, for the untrained
    reference too.
    """
    from tqdm.auto import tqdm

    from videopoet.core.bundle import read_bundle_config
    from videopoet.core.engine import Engine
    from videopoet.core.serialization import save_json, write_atomic_dir
    from videopoet.data.evaluation import untrained_engine, video_format
    from videopoet.demo.gallery import write_gallery

    began = time.perf_counter()
    out = Path(out)
    check_out(out)
    count = samples if samples is not None else (QUICK_SAMPLES if quick else SAMPLES)
    if count < 1:
        raise ConfigError("samples", count, "at least 1")
    if seed < 0:
        raise ConfigError("seed", seed, "a seed >= 0")
    config = read_bundle_config(bundle)
    engine = Engine.from_pretrained(bundle, device=device)
    twin = untrained_engine(engine) if untrained else None
    notes = []
    if twin is not None and _same_weights(engine.lm, twin.lm):
        notes.append(
            "This bundle's LM is itself untrained (its weights equal the untrained reference's): "
            "both columns show the same model. Train one, or use the committed trained bundle."
        )
    rate = engine.audio_spec.sample_rate if engine.audio is not None else world.SAMPLE_RATE
    ctx = Context(
        fmt=video_format(engine),
        image_fmt=_image_format(engine),
        world=world.WorldConfig(sample_rate=rate),
        sampling=dict(sampling or {}),
    )
    chosen = select_cases(engine, quick, cases)
    # a case draws its samples by its place in the full demo, so a section looks the same
    # whether it runs there, in --quick or alone (--cases)
    places = {c.key: i for i, c in enumerate(select_cases(engine))}
    entries: list[Entry] = []
    plans: list[tuple[Case, Entry, list[world.WorldSample]]] = []
    for case in chosen:
        number = places.get(case.key, len(places))
        entry = Entry(case.key, case.title, case.describe(), list(case.tasks), case.reference)
        why = case.unavailable(engine)
        if why is None and case.image and ctx.image_fmt is None:
            why = "the bundle serves no image format"
        items = [] if why else draw(case, count, DEMO_OFFSET + seed * 100_000 + number * 1_000, ctx)
        if not why and not items:
            why = "no held-out sample it can use was found"
        entry.skipped = why
        plans.append((case, entry, items))
    runs_per_item = 1 if twin is None else 2
    total = sum(len(items) * runs_per_item for _, _, items in plans)

    def fill(folder: Path) -> None:
        (folder / "media").mkdir()
        with tqdm(total=total, desc="demo", unit="run", disable=not progress) as bar:
            for case, entry, items in plans:
                if entry.skipped:
                    entries.append(entry)
                    continue
                try:
                    entries.append(run_case(case, items, engine, twin, ctx, folder, seed, bar))
                except VideoPoetError as exc:
                    entry.skipped = f"{type(exc).__name__}: {exc}"
                    entries.append(entry)
                    bar.update(len(items) * runs_per_item)
        report.seconds = time.perf_counter() - began
        save_json(folder / "demo.json", report.to_json())
        write_gallery(folder / "index.html", report)

    report = DemoReport(
        out=out,
        bundle=str(bundle),
        description=config.description,
        parameters=engine.lm.num_parameters(),
        formats=[str(f) for f in engine.formats],
        seed=seed,
        quick=quick,
        samples=count,
        sampling=ctx.sampling,
        entries=entries,
        untrained=twin is not None,
        notes=notes,
        generation=engine.generation.model_dump(mode="json") if engine.generation else None,
    )
    write_atomic_dir(out, fill)
    report.seconds = time.perf_counter() - began
    return report
