"""Training the prefix LM on a mixture of tasks (paper 4.2, 5.1).

``videopoet tokenize CONFIG`` runs each task's example builder over a dataset (the built-in
world, ``world:``, or a folder of your own videos with captions, ``folder:``) once and writes
token shards (:mod:`videopoet.data.shards`); ``videopoet train CONFIG`` trains the bundle's LM
on them with :func:`videopoet.core.training.train` (checkpoints, exact resume, metrics):

- **alternating gradient descent**: each step draws one group (one task at one layout, so
  one length) and a batch from it: no padding tokens, no mixed tasks in a batch;
- **the two-stage schedule**: image tasks make ``stages.image_share_first`` of the steps
  during the first ``stages.first_fraction`` of training, ``stages.image_share_after`` later
  (the paper: 90 % image first, then 90 % video);
- **condition dropout**: with probability ``dropout[task]`` an example loses the inputs its
  task drops for classifier-free guidance, exactly as generation's unconditional branch does
  (text slots masked and zeroed, a condition span set to ``<pad>`` and masked as keys), so
  that branch is trained;
- the batch of step ``s`` is a function of ``(train.seed, s)`` alone, so a resumed run sees
  the same data as an uninterrupted one.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from videopoet.core.errors import ConfigError
from videopoet.core.generation_config import GenerationDefaults
from videopoet.core.training import TrainConfig
from videopoet.data.folder import VIDEO_SUFFIXES

log = logging.getLogger(__name__)
PAD_ID = 0


class WorldData(BaseModel):
    """Which world samples ``videopoet tokenize`` draws."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    examples_per_task: int = Field(200, ge=1)
    eval_examples_per_task: int = Field(16, ge=0)
    start_index: int = Field(0, ge=0)


class FolderData(BaseModel):
    """A folder of your own videos for ``videopoet tokenize`` (docs/training.md).

    Every video file under ``root`` (recursively) is cut into clips of the format at 8 fps;
    a clip's caption comes from the listing (``captions``, by default ``captions.jsonl`` or
    ``captions.csv`` at the top of ``root``), else from ``NAME.txt`` beside ``NAME.mp4``.
    Whole videos go to train or eval by a seeded hash of their path.
    """

    model_config = ConfigDict(extra="forbid")

    root: str = Field(description="the folder of video files, searched recursively")
    captions: str | None = Field(
        None,
        description="a .jsonl ({file, caption} a line) or .csv (file,caption) listing; default: "
        "captions.jsonl or captions.csv in root if present; NAME.txt sidecars are read too",
    )
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="share of videos held out")
    extensions: list[str] = Field(
        default_factory=lambda: list(VIDEO_SUFFIXES), min_length=1, description="video suffixes"
    )
    clips_per_video: int | None = Field(
        None, ge=1, description="at most this many clips a video, spread over it (default: all)"
    )
    seed: int = Field(0, description="the train/eval split and the examples' random draws")

    @field_validator("extensions")
    @classmethod
    def _suffixes(cls, value: list[str]) -> list[str]:
        out = []
        for suffix in value:
            suffix = suffix.strip().lower()
            if not suffix.lstrip("."):
                raise ValueError(f"a file suffix such as .mp4, not {suffix!r}")
            out.append(suffix if suffix.startswith(".") else f".{suffix}")
        return out


class TokenizeConfig(BaseModel):
    """``videopoet tokenize CONFIG.yaml``: exactly one of ``world`` and ``folder``."""

    model_config = ConfigDict(extra="forbid")

    bundle: str = Field(description="the bundle whose tokenizers, text encoder, vocabulary")
    out: str = Field(description="the shard folder to write")
    tasks: list[str] | None = Field(None, description="default: every task the bundle runs")
    format: str | None = Field(None, description="video format (default: the bundle's first)")
    world: WorldData | None = Field(None, description="the built-in world (world: {} for defaults)")
    folder: FolderData | None = Field(None, description="a folder of your own videos")
    threads: int | None = Field(
        None,
        ge=1,
        description="torch CPU threads while tokenizing (default: torch's, one per core); "
        "fewer on a machine other jobs keep busy",
    )
    device: str = Field(
        "auto",
        description="where the tokenizers encode: cpu, cuda, cuda:N or auto (cuda when there "
        "is one); the text encoder and the shards stay on the CPU",
    )
    commit_every: int = Field(
        1000,
        ge=1,
        description="examples a chunk of progress holds: a killed run, run again, goes on "
        "after the last committed chunk (docs/training.md)",
    )

    def source(self) -> str:
        """``"world"`` or ``"folder"``; a :class:`ConfigError` unless exactly one is given."""
        if self.world is not None and self.folder is not None:
            raise ConfigError(
                "folder",
                self.folder.root,
                "either a world: or a folder: section, not both (remove one, or override "
                "world=null)",
            )
        if self.world is None and self.folder is None:
            raise ConfigError(
                "world",
                None,
                "a world: section (world: {} for the defaults) or a folder: section "
                "(folder: {root: DIR}) saying what to tokenize",
            )
        return "world" if self.world is not None else "folder"


class Stages(BaseModel):
    model_config = ConfigDict(extra="forbid")

    first_fraction: float = Field(0.25, ge=0, le=1)
    image_share_first: float = Field(0.9, ge=0, le=1)
    image_share_after: float = Field(0.1, ge=0, le=1)


class LMTrainingConfig(BaseModel):
    """``videopoet train CONFIG.yaml``: data, mixture, schedule, dropout, optimisation."""

    model_config = ConfigDict(extra="forbid")

    bundle: str = Field(description="the bundle to start from (videopoet init, or a trained one)")
    shards: str = Field(description="folder written by videopoet tokenize for this bundle")
    mixture: dict[str, float] | None = Field(
        None, description="task -> weight (default: every task in the shards, weight 1)"
    )
    stages: Stages = Stages()
    dropout: dict[str, float] = Field(
        default_factory=dict, description="task -> condition dropout probability"
    )
    default_dropout: float = Field(0.1, ge=0, le=1)
    eval_batches: int = Field(1, ge=0, description="held-out batches per task at each eval")
    generation: GenerationDefaults | None = Field(
        None,
        description="sampling defaults written into the bundle (default: the starting "
        "bundle's section); a resumed run may change them",
    )
    train: TrainConfig = TrainConfig()


# ---------------------------------------------------------------------------- tokenize


#: samples (world) or clips (folder) tokenized together: their clips are encoded in batches.
#: Batches are cut the same way on every attempt, so a resumed run encodes what an
#: uninterrupted one does.
ENCODE_BATCH = 8
#: config fields that may differ between the attempts of one tokenize (the staging record
#: holds the others; the bundle is checked by its identity, not its path)
FREE_TOKENIZE_FIELDS = {"bundle", "out", "threads", "device", "commit_every"}


def tokenize(
    config: TokenizeConfig, progress: bool = True, restart_changed: bool = False
) -> dict[str, Any]:
    """Write the shards of ``config``; returns a summary (examples and groups per split, and
    for a folder what was skipped and why; the examples tokenized per second by this run).

    Progress is committed every ``config.commit_every`` examples into ``OUT.partial`` beside
    ``out`` (:mod:`videopoet.data.shard_staging`): running the same config again goes on
    after the last committed chunk. Chunks made with another config or bundle identity are
    a :class:`ConfigError`, or with ``restart_changed`` thrown away."""
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        return _tokenize(config, progress, restart_changed)
    finally:
        torch.set_num_threads(threads)


def _tokenize(config: TokenizeConfig, progress: bool, restart_changed: bool) -> dict[str, Any]:
    from videopoet.core.engine import Engine
    from videopoet.core.training import resolve_device
    from videopoet.data.shard_staging import ShardStaging
    from videopoet.data.shards import ShardWriter, engine_identity

    source = config.source()
    captions = _check_folder(config.folder) if source == "folder" else None
    engine = Engine.from_pretrained(config.bundle, device=resolve_device(config.device))
    tasks = config.tasks or engine.tasks()
    unknown = sorted(set(tasks) - set(engine.tasks()))
    if unknown:
        raise ConfigError("tasks", unknown, f"tasks this bundle runs: {engine.tasks()}")
    video_format = engine.pick_format(engine.registry.task("t2v"), config.format)
    identity = engine_identity(engine)
    writer = ShardWriter(config.out, identity, engine.lm.config.text_dim)
    staging = ShardStaging(
        config.out,
        {
            "config": config.model_dump(mode="json", exclude=FREE_TOKENIZE_FIELDS),
            "identity": identity,
            "text_dim": engine.lm.config.text_dim,
            "tasks": tasks,
            "format": str(video_format),
            "encode_batch": ENCODE_BATCH,  # how batches are cut: where a chunk stops
        },
        config.commit_every,
    )
    began = time.perf_counter()
    if source == "world":
        summary, record = _tokenize_world(
            engine, tasks, video_format, writer, config, staging, progress, restart_changed
        )
    else:
        summary, record = _tokenize_folder(
            engine,
            tasks,
            video_format,
            writer,
            config.folder,
            captions,
            staging,
            progress,
            restart_changed,
        )
    path = writer.write(
        {"bundle": str(config.bundle), "format": str(video_format), "source": record}
    )
    staging.remove()
    seconds = time.perf_counter() - began
    done = len(writer.log) - staging.resumed
    groups = {s: sum(1 for (sp, _, _) in writer.groups if sp == s) for s in ("train", "eval")}
    timing = {
        "seconds": round(seconds, 2),
        "examples_per_s": round(done / seconds, 2) if seconds > 0 else None,
        "resumed_examples": staging.resumed,
        "restarted": staging.restarted,
    }
    if progress:
        resumed = f"; {staging.resumed} from an earlier attempt" if staging.resumed else ""
        print(
            f"tokenize: {done} examples in {seconds:.1f} s ({timing['examples_per_s']} "
            f"examples/s, {torch.get_num_threads()} threads){resumed}",
            file=sys.stderr,
        )
    return {
        "shards": str(path),
        "tasks": tasks,
        "source": source,
        "groups": groups,
        **summary,
        **timing,
    }


def _tokenize_world(
    engine: Any,
    tasks: list[str],
    video_format: Any,
    writer: Any,
    config: TokenizeConfig,
    staging: Any,
    progress: bool,
    restart_changed: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    from tqdm.auto import tqdm

    from videopoet.data import world

    cfg = world.WorldConfig(seed=config.world.seed)
    splits = (
        ("train", config.world.start_index, config.world.examples_per_task),
        ("eval", world.EVAL_OFFSET, config.world.eval_examples_per_task),
    )
    batches = [
        (split, range(start + first, start + min(count, first + ENCODE_BATCH)))
        for split, start, count in splits
        for first in range(0, count, ENCODE_BATCH)
    ]
    staging.open(writer, restart_changed)
    total = len(tasks) * sum(n for _, _, n in splits)
    bar = tqdm(
        total=total,
        initial=len(writer.log),
        desc="tokenize",
        disable=not progress,
        dynamic_ncols=True,
    )
    for number in range(staging.next_batch, len(batches)):
        split, indices = batches[number]
        with engine.reuse_encodings():
            built = [_build_examples(engine, tasks, i, video_format, cfg) for i in indices]
            clips = [pair for examples in built for ex in examples for pair in _clips(ex)]
            engine.prime_encodings(clips)
            for examples in built:
                for example in examples:
                    writer.add(split, engine.encode_example(example))
                    bar.update(1)
        staging.batch_done(number + 1, writer, {})
    bar.close()
    record = {"kind": "world", **config.world.model_dump(mode="json")}
    return {"examples": {s: len(tasks) * n for s, _, n in splits}}, record


# ---------------------------------------------------------------------------- folder


def _check_folder(data: FolderData) -> Any:
    """The folder's caption listing, read before the bundle loads; a missing root, a root
    without video files or a bad listing is a :class:`ConfigError` naming the field."""
    from videopoet.data.folder import read_captions

    root = Path(data.root)
    if not root.is_dir():
        what = "it is a file" if root.exists() else "it does not exist"
        raise ConfigError("folder.root", data.root, f"an existing folder of videos ({what})")
    suffixes = tuple(data.extensions)
    if not any(p.is_file() and p.suffix.lower() in suffixes for p in root.rglob("*")):
        raise ConfigError(
            "folder.root",
            data.root,
            f"a folder holding video files ({', '.join(suffixes)}, searched recursively); "
            "it holds none",
        )
    return read_captions(root, data.captions, "folder.captions")


def _task_needs(spec: Any) -> tuple[bool, bool]:
    """(needs a caption, needs a sound track) to build an example of ``spec``."""
    prefix = spec.prefix
    text = bool(prefix.text) and not prefix.is_optional("text")
    audio = bool(spec.target.audio) or (bool(prefix.audio) and not prefix.is_optional("audio"))
    return text, audio


def _tokenize_folder(
    engine: Any,
    tasks: list[str],
    video_format: Any,
    writer: Any,
    data: FolderData,
    captions: Any,
    staging: Any,
    progress: bool,
    restart_changed: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every clip of every video under ``data.root``, for every task it can serve."""
    import hashlib
    import json

    from tqdm.auto import tqdm

    from videopoet.data import folder as media_folder
    from videopoet.data.media import SAMPLE_RATE, MediaError, load_clip
    from videopoet.tasks.base import InputError, Source

    root = Path(data.root)
    suffixes = tuple(data.extensions)
    report = media_folder.scan_folder(root, video_format, suffixes=suffixes, progress=progress)
    skipped_files = Counter(report.problems.values())
    if not report.clips:
        raise ConfigError(
            "folder.root",
            data.root,
            f"at least one readable video of {video_format.frames} frames or more at 8 fps "
            f"({video_format.frames / 8:g} s); all {len(report.skipped)} were skipped "
            f"({_counts(skipped_files)}), e.g. {report.skipped[0][0]}: {report.skipped[0][1]}",
        )

    starts: dict[str, list[float]] = {}
    for path, start in report.clips:
        starts.setdefault(path, []).append(start)
    names = {path: media_folder.relative_name(root, path) for path in starts}
    splits = media_folder.split_videos(list(names.values()), data.eval_fraction, data.seed)
    caption_from = Counter()
    plan = []  # (split, path, name, start, caption, has audio)
    for path in sorted(starts, key=names.get):
        name = names[path]
        caption, origin = captions.by_file.get(name), "listing"
        if caption is None:
            caption = media_folder.sidecar_caption(path)
            origin = "none" if caption is None else "sidecar"
        caption_from[origin] += 1
        for start in media_folder.pick_windows(starts[path], data.clips_per_video):
            plan.append((splits[name], path, name, start, caption, report.audio[path]))
    scanned = set(names.values()) | {media_folder.relative_name(root, p) for p, _ in report.skipped}
    unmatched = sorted(set(captions.by_file) - scanned)
    if unmatched:
        log.warning(
            "%d captions in %s name no video file under %s, e.g. %s",
            len(unmatched),
            captions.listing,
            root,
            unmatched[0],
        )

    needs = {task: _task_needs(engine.registry.task(task)) for task in tasks}
    want_audio = any(audio for _, audio in needs.values())
    rate = engine.audio_spec.sample_rate if engine.audio_spec is not None else SAMPLE_RATE
    # what the batches hold: chunks of another clip list (videos added, captions edited) or
    # of another split are not mixed in
    listed = [[item[0], *item[2:]] for item in plan]  # not the absolute paths
    digest = hashlib.sha256(json.dumps(listed).encode()).hexdigest()[:16]
    staging.open(writer, restart_changed, data=digest)
    per_task = {"train": Counter(), "eval": Counter()}
    for ident, _ in writer.log:  # the examples of the chunks an earlier attempt committed
        per_task[ident[0]][ident[1]] += 1
    done = staging.stats.get("skipped", {})
    skipped_examples = {task: Counter(done.get(task, {})) for task in tasks}
    unreadable = staging.stats.get("unreadable", 0)
    batches = range(0, len(plan), ENCODE_BATCH)
    first_batch = staging.next_batch
    bar = tqdm(
        total=len(plan),
        initial=min(len(plan), first_batch * ENCODE_BATCH),
        desc="tokenize",
        unit="clip",
        disable=not progress,
    )
    for number in range(first_batch, len(batches)):
        first = batches[number]
        with engine.reuse_encodings():
            built = []
            for split, path, name, start, caption, has_audio in plan[first : first + ENCODE_BATCH]:
                try:
                    clip = load_clip(
                        path,
                        video_format,
                        start,
                        audio=want_audio and has_audio,
                        sample_rate=rate,
                    )
                except MediaError as exc:
                    unreadable += 1
                    log.warning("skipping the clip at %g s of %s", start, exc)
                    continue
                source = Source.from_clip(clip, caption)
                for task in tasks:
                    need_text, need_audio = needs[task]
                    if need_text and caption is None:
                        skipped_examples[task]["no_caption"] += 1
                        continue
                    if need_audio and source.audio is None:
                        skipped_examples[task]["no_audio"] += 1
                        continue
                    spec = engine.registry.task(task)
                    fmt = None if spec.target.visual == "image" else video_format
                    seed = int(media_folder.hash_fraction(data.seed, name, start, task) * 2**31)
                    try:
                        example = engine.build_example(task, source, fmt, seed)
                    except InputError as exc:
                        skipped_examples[task]["unusable"] += 1
                        log.warning("no %s example from %s at %g s: %s", task, name, start, exc)
                        continue
                    built.append((split, example))
            engine.prime_encodings([pair for _, ex in built for pair in _clips(ex)])
            for split, example in built:
                writer.add(split, engine.encode_example(example))
                per_task[split][example.task] += 1
        stats = {"unreadable": unreadable, "skipped": skipped_examples}
        staging.batch_done(number + 1, writer, json.loads(json.dumps(stats)))
        bar.update(min(ENCODE_BATCH, len(plan) - first))
    bar.close()

    if unreadable == len(plan):
        raise ConfigError(
            "folder.root", data.root, f"videos whose clips can be read; none of {len(plan)} was"
        )
    if not any(per_task[s] for s in per_task):
        raise ConfigError(
            "tasks",
            tasks,
            "tasks the folder's clips can serve: every example was skipped "
            f"({ {t: dict(c) for t, c in skipped_examples.items() if c} }); captions come from "
            "captions.jsonl/.csv or NAME.txt beside each video (docs/training.md)",
        )
    for task in tasks:
        if not per_task["train"][task]:
            log.warning("task %s has no training example: %s", task, dict(skipped_examples[task]))
    videos = Counter(splits.values())
    clips = Counter(item[0] for item in plan)
    record = {
        "kind": "folder",
        "root": str(root.resolve()),
        "captions": captions.listing,
        **data.model_dump(mode="json", exclude={"root", "captions"}),
        "videos": {s: videos[s] for s in ("train", "eval")},
        "clips": {s: clips[s] for s in ("train", "eval")},
        "caption_sources": {k: caption_from[k] for k in ("listing", "sidecar", "none")},
        "captions_without_video": len(unmatched),
        "skipped": {
            "files": dict(skipped_files),
            "clips": unreadable,
            "examples": {t: dict(c) for t, c in skipped_examples.items() if c},
        },
        "skipped_files": [[media_folder.relative_name(root, p), why] for p, why in report.skipped],
        "eval_videos": sorted(n for n, s in splits.items() if s == "eval"),
    }
    summary = {
        "examples": {s: sum(per_task[s].values()) for s in ("train", "eval")},
        "per_task": {s: {t: per_task[s][t] for t in tasks} for s in ("train", "eval")},
        "videos": record["videos"],
        "clips": record["clips"],
        "caption_sources": record["caption_sources"],
        "captions_without_video": len(unmatched),
        "skipped": record["skipped"],
    }
    return summary, record


def _counts(counter: Counter) -> str:
    return ", ".join(f"{n} {what}" for what, n in sorted(counter.items()))


def _build_examples(engine: Any, tasks: list[str], index: int, video_format: Any, cfg: Any) -> list:
    from videopoet.data import world
    from videopoet.tasks.base import Source

    source = Source.from_world(world.sample(index, *_frames_hw(video_format), cfg))
    out = []
    for t, task in enumerate(tasks):
        spec = engine.registry.task(task)
        fmt = engine.pick_format(spec, None if spec.target.visual == "image" else video_format)
        out.append(engine.build_example(task, source, fmt, index * 1009 + t))
    return out


def _clips(example: Any) -> list[tuple[torch.Tensor, Any]]:
    """The (clip, mask) pairs ``encode_example`` will encode for ``example``."""
    conditions = example.conditions
    pairs = [(clip, conditions.masks.get(name)) for name, clip in conditions.visual.items()]
    if example.video is not None:
        pairs.append((example.video, None))
    return pairs


def _frames_hw(fmt: Any) -> tuple[int, int, int]:
    return fmt.frames, fmt.height, fmt.width


# ---------------------------------------------------------------------------- batches


class MixtureSampler:
    """The batch of each step: stage → image/video → task by weight → group → examples."""

    def __init__(self, shards: Any, config: LMTrainingConfig, registry: Any, split: str = "train"):
        self.shards, self.config, self.split = shards, config, split
        present = shards.tasks(split)
        weights = config.mixture or {t: 1.0 for t in present}
        if split != "train":  # a held-out split may lack a task (no held-out clip with sound)
            weights = {t: w for t, w in weights.items() if t in present}
        missing = sorted(set(weights) - set(present))
        if missing:
            raise ConfigError("mixture", missing, f"tasks present in the shards: {present}")
        for task, weight in weights.items():
            if weight < 0:
                raise ConfigError(f"mixture.{task}", weight, "a weight >= 0")
        self.weights = {t: w for t, w in weights.items() if w > 0}
        if not self.weights:
            raise ConfigError("mixture", weights, "at least one task with a positive weight")
        for task, p in config.dropout.items():
            if task not in self.weights and split == "train":
                raise ConfigError(
                    f"dropout.{task}", p, f"a task of the mixture: {list(self.weights)}"
                )
            if not 0 <= p <= 1:
                raise ConfigError(f"dropout.{task}", p, "a probability in [0, 1]")
        self.specs = {t: registry.task(t) for t in self.weights}
        self.image = [t for t, s in self.specs.items() if s.target.visual == "image"]
        self.video = [t for t in self.weights if t not in self.image]

    def image_share(self, step: int) -> float | None:
        """Probability of an image task at ``step``; None when only one kind is in the mix."""
        if not self.image or not self.video:
            return None
        stages, steps = self.config.stages, self.config.train.steps
        first = step < stages.first_fraction * steps
        return stages.image_share_first if first else stages.image_share_after

    def pick_task(self, rng: random.Random, step: int) -> str:
        share = self.image_share(step)
        pool = list(self.weights)
        if share is not None:
            pool = self.image if rng.random() < share else self.video
        return rng.choices(pool, weights=[self.weights[t] for t in pool])[0]

    def batch(self, step: int, micro: int = 0, batch_size: int | None = None) -> dict[str, Any]:
        """The batch of ``step`` (micro-batch ``micro`` of ``train.grad_accum``: each its own
        task and group, as AGD wants; the stage is the step's)."""
        seed = self.config.train.seed
        rng = random.Random(f"{seed}/{self.split}/{step}" + (f"/{micro}" if micro else ""))
        task = self.pick_task(rng, step)
        return self.task_batch(task, rng, batch_size)

    def task_batch(
        self, task: str, rng: random.Random, batch_size: int | None = None, dropout: bool = True
    ) -> dict[str, Any]:
        groups = self.shards.of(self.split, task)
        group = rng.choices(groups, weights=[g.count for g in groups])[0]
        size = batch_size or self.config.train.batch_size
        rows = (
            rng.sample(range(group.count), size)
            if group.count >= size
            else [rng.randrange(group.count) for _ in range(size)]
        )
        rows.sort()
        arrays = self.shards.arrays(group)
        tokens = torch.from_numpy(arrays["tokens"][rows].astype("int64"))
        batch: dict[str, Any] = {
            "tokens": tokens,
            "prefix_length": group.prefix_length,
            "task": task,
            "group": group.key,
        }
        if group.text_slots:
            batch["text_embeddings"] = torch.from_numpy(arrays["text"][rows].astype("float32"))
            batch["text_mask"] = torch.from_numpy(arrays["text_mask"][rows].copy())
            batch["text_start"] = group.text_start
        grid = group.grid_tensor()
        if grid is not None:
            batch["grid"] = grid.expand(size, -1, -1)  # per row: batches are split by rows
        p = self.config.dropout.get(task, self.config.default_dropout) if dropout else 0.0
        if not self.specs[task].cfg_drop:
            p = 0.0  # nothing is dropped for guidance: no unconditional branch to train
        dropped = [rng.random() < p for _ in rows]
        if any(dropped):
            drop_conditions(batch, group, self.specs[task].cfg_drop, dropped)
        batch["dropped"] = sum(dropped)
        return batch


def drop_conditions(
    batch: dict[str, Any], group: Any, names: tuple[str, ...], rows: list[bool]
) -> None:
    """Remove the ``cfg_drop`` inputs from the rows marked True, as generation's
    unconditional branch does: text masked and zeroed; a span set to <pad>, masked as keys."""
    which = torch.tensor(rows)
    key_mask = torch.ones(batch["tokens"].shape, dtype=torch.bool)  # every key, target too
    for name in names:
        spans = (
            [s for n, s in group.conditions.items() if n not in ("text", "audio")]
            if name == "visual"
            else [group.conditions[name]]
            if name in group.conditions
            else []
        )
        if name == "text" and "text_mask" in batch:
            batch["text_mask"][which] = False
            batch["text_embeddings"][which] = 0.0
            continue
        for start, stop in spans:
            batch["tokens"][which, start:stop] = PAD_ID
            key_mask[which, start:stop] = False
    if not bool(key_mask.all()):
        batch["key_mask"] = key_mask


# ---------------------------------------------------------------------------- training


def lm_task_loss(model: Any, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The LM loss, also logged under the batch's task (``loss/<task>``)."""
    from videopoet.core.model import lm_loss_fn

    loss = lm_loss_fn(model, batch)["loss"]
    return {"loss": loss, f"loss/{batch['task']}": loss.detach()}


def train_lm(raw: dict[str, Any]) -> dict[str, Any]:
    """Train from a loaded config dict; the result names the written bundle."""
    from videopoet.core.engine import Engine
    from videopoet.core.tokenizer_training import validate_section
    from videopoet.core.training import (
        check_resume_config,
        ensure_out_dir,
        prepare_run,
        to_device,
        train,
    )
    from videopoet.data.shards import StaleShardsError, TokenShards, engine_identity

    config = validate_section(LMTrainingConfig, raw, "")
    train_config = config.train
    run_config = config.model_dump(mode="json", exclude={"train"})
    check_resume_config(train_config, run_config)
    out_dir = ensure_out_dir(train_config.out_dir)
    prepare_run(train_config)
    engine = Engine.from_pretrained(config.bundle)
    if config.generation is not None:  # checked (task names) before any training
        engine.generation = config.generation
    shards = TokenShards(config.shards, engine_identity(engine))
    if engine.lm.config.grid_positions and any(not g.grid for g in shards.groups):
        raise StaleShardsError(
            f"the shards in {config.shards} hold no grid positions (written before them) and "
            "this LM uses them (grid_positions); run videopoet tokenize again for this bundle"
        )
    sampler = MixtureSampler(shards, config, engine.registry)
    evaluated = set(config.mixture or shards.tasks("train")) & set(shards.tasks("eval"))
    held_out = MixtureSampler(shards, config, engine.registry, "eval") if evaluated else None
    model = engine.lm.train()

    def eval_fn(net: torch.nn.Module) -> dict[str, float]:
        if held_out is None or config.eval_batches == 0:
            return {}
        out = {}
        with torch.no_grad():
            for task in held_out.weights:
                if not shards.of("eval", task):
                    continue
                losses = []
                for k in range(config.eval_batches):
                    rng = random.Random(f"eval/{task}/{k}")
                    batch = held_out.task_batch(task, rng, dropout=False)
                    batch = to_device(batch, net.device)  # the trainer moves only its own batches
                    losses.append(float(lm_task_loss(net, batch)["loss"]))
                out[f"loss/{task}"] = sum(losses) / len(losses)
        if out:
            out["loss"] = sum(out.values()) / len(out)
        return out

    result = train(
        model,
        lm_task_loss,
        sampler.batch,
        train_config,
        eval_fn,
        {"kind": "videopoet.prefix_lm", "model": model.config.model_dump(mode="json")},
        run_config,
    )
    # ``model`` is the plain module (train wraps it for DDP/FSDP itself); under torchrun rank 0
    # holds the trained weights and writes the bundle, the other ranks wait for it.
    from videopoet.core.training import barrier, is_main_process

    engine.lm = model.eval()
    bundle = Path(out_dir) / "bundle"
    if is_main_process():
        bundle = engine.save_pretrained(bundle, description="trained by videopoet train")
    barrier()
    return {**result, "bundle": str(bundle)}


def train_lm_from_yaml(path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    from videopoet.core.tokenizer_training import load_config

    return train_lm(load_config(path, overrides))


def tokenize_from_yaml(path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    from videopoet.core.tokenizer_training import load_config, validate_section

    config = validate_section(TokenizeConfig, load_config(path, overrides), "")
    return tokenize(config)


def bundle_from_run(
    run_dir: str | Path,
    out: str | Path,
    step: int | None = None,
    generation: list[str] | None = None,
) -> Path:
    """A bundle from a training run's checkpoint (the newest, or ``step``): pick the step
    with the best held-out loss from ``metrics.jsonl`` and export it without training on.

    Its ``generation`` section is the run config's (else the starting bundle's), with the
    ``KEY=VALUE`` / ``TASK.KEY=VALUE`` items of ``generation`` applied over it."""
    from videopoet.core.generation_config import apply_overrides

    engine, chosen = engine_from_run(run_dir, step)
    engine.generation = apply_overrides(engine.generation, generation)
    return engine.save_pretrained(out, description=f"{run_dir} at step {chosen}")


def run_checkpoint(path: str | Path) -> tuple[Path, int | None] | None:
    """``(run folder, step)`` when ``path`` is an LM training run's checkpoint
    (``RUN/checkpoints/step_N``), ``(run folder, None)`` for the run folder itself (its newest
    checkpoint); None for anything else. What lets every checkpoint load as a bundle."""
    path = Path(path)
    if path.name.startswith("step_") and path.parent.name == "checkpoints":
        run, step = path.parent.parent, path.name.removeprefix("step_")
        return (run, int(step)) if step.isdigit() and _is_lm_run(run) else None
    return (path, None) if _is_lm_run(path) and (path / "checkpoints").is_dir() else None


def _is_lm_run(run_dir: Path) -> bool:
    from videopoet.core.serialization import load_json

    record = run_dir / "train_config.json"
    if not record.is_file():
        return False
    try:
        recorded = load_json(record)
    except ValueError:
        return False
    return isinstance(recorded, dict) and bool(recorded.get("bundle")) and "mixture" in recorded


def engine_from_run(
    run_dir: str | Path,
    step: int | None = None,
    device: str | torch.device = "cpu",
    registry: Any = None,
) -> tuple[Any, int]:
    """The Engine of a training run's checkpoint (the newest, or ``step``): the starting
    bundle the run's ``train_config.json`` names, with the checkpoint's LM weights and the
    run's ``generation`` section. Returns ``(engine, step)``."""
    from videopoet.core.engine import Engine
    from videopoet.core.generation_config import parse_generation
    from videopoet.core.serialization import load_json
    from videopoet.core.training import list_checkpoints, load_checkpoint_weights

    run_dir = Path(run_dir)
    record = run_dir / "train_config.json"
    if not record.is_file():
        raise ConfigError("run", str(run_dir), "a folder written by videopoet train")
    checkpoints = {int(p.name.removeprefix("step_")): p for p in list_checkpoints(run_dir)}
    if not checkpoints:
        raise ConfigError("run", str(run_dir), "a run with at least one checkpoint")
    chosen = max(checkpoints) if step is None else step
    if chosen not in checkpoints:
        raise ConfigError("step", step, f"one of the kept checkpoints {sorted(checkpoints)}")
    recorded = load_json(record)
    bundle = recorded.get("bundle")
    if not bundle:
        raise ConfigError(str(record), None, "the run's config with its starting bundle")
    engine = Engine.from_pretrained(bundle, device=device, registry=registry)
    if recorded.get("generation") is not None:
        engine.generation = parse_generation(recorded["generation"], f"{record}: generation")
    state = load_checkpoint_weights(checkpoints[chosen])
    engine.lm.load_state_dict(state)  # copied into the parameters, on their device
    return engine, chosen
