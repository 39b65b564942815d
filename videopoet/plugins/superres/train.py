"""``videopoet train-refiner CONFIG.yaml [key=value ...]``: train a super-resolution stage.

The YAML (``configs/superres/``)::

    refiner: superres                  # the registered refiner
    tokenizer: checkpoints/...         # a saved visual tokenizer folder (its tokens are modelled)
    text_encoder: {name: hash}         # a registered text encoder and its options
    stage: {...}                       # StageConfig: windows, widths, sampling defaults
    data: {...}                        # the world's clips: format, counts, seed
    objective: {...}                   # LR-token noise, condition dropout
    eval: {...}                        # held-out clips sampled at each evaluation
    train: {...}                       # videopoet.core.training.TrainConfig

Everything is validated before any weight or clip is touched (``stage.windows`` that do not
divide the grid are an error naming ``stage.windows`` and the axis). The stage's ``grid`` and
``codebook_bits`` follow from the tokenizer and ``data.format``; the trainer fills them in (a
value given that disagrees is an error), with the tokenizer's name and weight fingerprint and
the text encoder's record, so a trained stage says what it runs with.

Data (paper 3.3): world clips at ``data.format`` (the high-resolution side) are tokenized once
into ``out_dir/tokens/`` (chunks written atomically, so a killed run keeps what it finished;
a cache made with another tokenizer or data section is rebuilt); the low-resolution tokens
come from the clip bicubic-downsampled by the stage's scale. Each step draws
``train.batch_size`` cached clips as a function of ``(train.seed, step)`` (exact resume), masks
a share ``cos(pi/2 · u)``, ``u ~ U(0, 1)``, of the high-resolution tokens (MAGVIT's cosine
schedule), resamples a uniform share in ``[0, objective.lr_noise]`` of the low-resolution
tokens at random (noise augmentation) and drops the low-resolution condition and the text
each for ``objective.lr_drop`` / ``objective.text_drop`` of the clips. The loss is the
factorized cross-entropy of the masked tokens.

Evaluation (held-out world indices): the masked-token loss and accuracy at half masking, and,
on ``eval.sample_clips`` clips sampled with the stage's sampling defaults, ``superres_psnr``
against the ground truth beside ``bicubic_psnr`` (bicubic upsampling of the decoded
low-resolution tokens: what the stage must beat) and ``tokenizer_psnr`` (the decoded
high-resolution tokens of the ground truth: the ceiling in token space), each with the
analyser's colour accuracy and object position error.

The result folder ``out_dir/refiner/`` (``config.json`` + ``model.safetensors``) is a
one-stage ``superres`` refiner; ``videopoet add-refiner BUNDLE DIR [DIR2]`` puts it (or a
cascade of two) into a bundle.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from videopoet.core.errors import ConfigError
from videopoet.core.serialization import load_json, load_tensors, save_json, save_tensors
from videopoet.core.tokenizer_training import load_config, validate_section
from videopoet.core.training import (
    TrainConfig,
    barrier,
    check_resume_config,
    ensure_out_dir,
    is_main_process,
    prepare_run,
    train,
)
from videopoet.data import world

TOKENS_DIR = "tokens"
RESULT_DIR = "refiner"


class TextEncoderChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "hash"
    options: dict[str, Any] = Field(default_factory=dict)


class DataConfig(world.WorldConfig):
    """``data:``: the world's settings, the high-resolution clip format and how many clips."""

    format: str = Field("17x128x128", description="high-resolution clips, FRAMESxHEIGHTxWIDTH")
    clips: int = Field(800, ge=1, description="training clips, tokenized once")
    eval_clips: int = Field(16, ge=1, description="held-out clips for the token loss")
    chunk: int = Field(50, ge=1, description="clips per cached token file")

    def world(self) -> world.WorldConfig:
        return world.WorldConfig(**self.model_dump(include=set(world.WorldConfig.model_fields)))


class ObjectiveConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lr_noise: float = Field(0.2, ge=0, le=1, description="max share of LR tokens resampled")
    lr_drop: float = Field(0.1, ge=0, le=1, description="clips without the LR condition")
    text_drop: float = Field(0.1, ge=0, le=1, description="clips without their text")


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sample_clips: int = Field(8, ge=0, description="held-out clips sampled at each evaluation")
    mask_ratio: float = Field(0.5, gt=0, le=1, description="masking of the token loss")


class RefinerTrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refiner: str = "superres"
    tokenizer: str = Field(description="a saved visual tokenizer folder")
    text_encoder: TextEncoderChoice = TextEncoderChoice()
    stage: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)
    objective: dict[str, Any] = Field(default_factory=dict)
    eval: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)


# ---------------------------------------------------------------------------- config


class Plan:
    """A validated config: every section parsed and the stage completed from the tokenizer."""

    def __init__(self, raw: dict[str, Any]) -> None:
        from videopoet.core.declarations import VisualTokenizerSpec, parse_format
        from videopoet.core.plugins import get_registry
        from videopoet.plugins.superres.config import StageConfig

        self.config = validate_section(RefinerTrainingConfig, raw, "")
        self.train = validate_section(TrainConfig, self.config.train, "train")
        self.data = validate_section(DataConfig, self.config.data, "data")
        self.objective = validate_section(ObjectiveConfig, self.config.objective, "objective")
        self.eval = validate_section(EvalConfig, self.config.eval, "eval")
        registry = get_registry()
        self.registry = registry
        if self.config.refiner != "superres":
            registry.refiner(self.config.refiner)  # an unknown name suggests close matches
            raise ConfigError("refiner", self.config.refiner, "superres (the trainer this has)")
        registry.refiner("superres")
        if self.data.dataset != "world":
            raise ConfigError("data.dataset", self.data.dataset, "world")
        self.tokenizer_dir = Path(self.config.tokenizer)
        config_path = self.tokenizer_dir / "config.json"
        if not config_path.is_file():
            raise ConfigError("tokenizer", str(self.tokenizer_dir), "a folder with config.json")
        name = load_json(config_path).get("name")
        if name not in registry.tokenizers:
            raise ConfigError(f"{config_path}: name", name, "a registered visual tokenizer")
        spec = registry.tokenizer(name)
        if not isinstance(spec, VisualTokenizerSpec):
            raise ConfigError("tokenizer", str(self.tokenizer_dir), "a visual tokenizer")
        self.spec = spec
        try:
            self.format = parse_format(self.data.format)
        except ConfigError as exc:
            raise ConfigError("data.format", exc.value, exc.expected) from None
        stage = dict(self.config.stage)
        scale = int(stage.get("scale", 2))
        try:
            grid = spec.latent_shape(self.format.frames, self.format.height, self.format.width)
            lr_size = (self.format.height // scale, self.format.width // scale)
            if self.format.height % scale or self.format.width % scale:
                raise ConfigError("format", str(self.format), f"sides divisible by {scale}")
            spec.latent_shape(self.format.frames, *lr_size)
        except ConfigError as exc:
            raise ConfigError(
                "data.format",
                self.data.format,
                f"a format whose clip and its 1/{scale} downsampled twin the tokenizer takes "
                f"({exc})",
            ) from None
        self.lr_format = (self.format.frames, *lr_size)
        for key, value in (("grid", grid), ("codebook_bits", spec.codebook_bits)):
            given = stage.get(key)
            if given is not None and (tuple(given) if key == "grid" else given) != value:
                raise ConfigError(
                    f"stage.{key}", given, f"{value} (from the tokenizer and data.format)"
                )
            stage[key] = value
        text_spec = registry.text_encoder(self.config.text_encoder.name)
        stage.setdefault("text_dim", self.config.text_encoder.options.get("dim", text_spec.dim))
        stage["tokenizer"] = spec.name
        self.stage = validate_section(StageConfig, stage, "stage")

    def run_config(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json", exclude={"train"})


# ---------------------------------------------------------------------------- token cache


class TokenCache:
    """High- and low-resolution ids of world clips, tokenized once, in chunks on disk."""

    def __init__(self, root: Path, identity: dict[str, Any]) -> None:
        self.root, self.identity = root, identity
        manifest = root / "manifest.json"
        if root.is_dir() and (not manifest.is_file() or load_json(manifest) != identity):
            shutil.rmtree(root)  # made with another tokenizer or data: derived, so rebuilt
        root.mkdir(parents=True, exist_ok=True)
        save_json(manifest, identity)

    def build(
        self, split: str, indices: list[int], plan: Plan, tokenizer: Any, progress: bool
    ) -> dict[str, Any]:
        """``{"hr": (n, N), "lr": (n, N_lr), "captions": [...], "indices": [...]}``."""
        from tqdm.auto import tqdm

        from videopoet.plugins.superres.refiner import resize

        size, scale = plan.data.chunk, plan.stage.scale
        fmt, cfg = plan.format, plan.data.world()
        parts = []
        chunks = range(0, len(indices), size)
        with tqdm(total=len(indices), desc=f"tokenize {split}", disable=not progress) as bar:
            for number, start in enumerate(chunks):
                path = self.root / f"{split}_{number:04d}.safetensors"
                names = self.root / f"{split}_{number:04d}.json"
                wanted = indices[start : start + size]
                record = load_json(names) if names.is_file() else {}
                if path.is_file() and record.get("indices") == wanted:
                    part = load_tensors(path)
                    captions = record["captions"]
                else:
                    hr_ids, lr_ids, captions = [], [], []
                    for first in range(0, len(wanted), 8):
                        items = [
                            world.sample(i, fmt.frames, fmt.height, fmt.width, cfg)
                            for i in wanted[first : first + 8]
                        ]
                        video = torch.stack([item.video for item in items])
                        with torch.no_grad():
                            hr_ids.append(tokenizer.encode(video).cpu().int())
                            lr_ids.append(tokenizer.encode(resize(video, 1 / scale)).cpu().int())
                        captions += [item.caption for item in items]
                        bar.update(len(items))
                    part = {"hr": torch.cat(hr_ids), "lr": torch.cat(lr_ids)}
                    save_tensors(path, part)
                    save_json(names, {"indices": wanted, "captions": captions})
                    parts.append((part, captions))
                    continue
                bar.update(len(wanted))
                parts.append((part, captions))
        return {
            "hr": torch.cat([p["hr"] for p, _ in parts]).long(),
            "lr": torch.cat([p["lr"] for p, _ in parts]).long(),
            "captions": [c for _, caps in parts for c in caps],
            "indices": indices,
        }


# ---------------------------------------------------------------------------- the adapter


class SuperResTraining:
    """What :func:`videopoet.core.training.train` needs: model, batches, loss, eval."""

    def __init__(self, plan: Plan, out_dir: Path) -> None:
        from videopoet.core.bundle import TextEncoderRecord
        from videopoet.core.engine import load_tokenizer
        from videopoet.plugins.superres.refiner import SuperResolution, tokenizer_fingerprint

        self.plan = plan
        self.tokenizer, _ = load_tokenizer(plan.tokenizer_dir, "visual", plan.registry)
        self.tokenizer.requires_grad_(False)
        choice = plan.config.text_encoder
        self.text_encoder = plan.registry.text_encoder(choice.name).factory(**choice.options)
        if self.text_encoder.dim != plan.stage.text_dim:
            raise ConfigError(
                "stage.text_dim", plan.stage.text_dim, f"{self.text_encoder.dim} (the encoder's)"
            )
        record = TextEncoderRecord(
            name=choice.name,
            options=dict(choice.options),
            identity=self.text_encoder.identity,
            dim=self.text_encoder.dim,
        )
        fingerprint = tokenizer_fingerprint(self.tokenizer)
        self.stage_config = plan.stage.model_copy(
            update={"tokenizer_identity": fingerprint, "text_encoder": record}
        )
        self.model = SuperResolution([self.stage_config])
        self.model_config = self.model.config_dict()
        identity = {  # the clip counts may change: chunks are checked by their indices
            "tokenizer": fingerprint,
            "data": plan.data.model_dump(mode="json", exclude={"clips", "eval_clips"}),
            "scale": plan.stage.scale,
        }
        cache = TokenCache(out_dir / TOKENS_DIR, identity)
        progress = plan.train.progress
        d = plan.data
        self.train_set = cache.build("train", list(range(d.clips)), plan, self.tokenizer, progress)
        held = [world.EVAL_OFFSET + i for i in range(d.eval_clips)]
        self.eval_set = cache.build("eval", held, plan, self.tokenizer, progress)
        self._text: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # ------------------------------------------------------------------ batches

    def _encode_texts(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        for caption in captions:
            if caption not in self._text:
                encoded = self.text_encoder.encode([caption])
                self._text[caption] = (encoded.embeddings[0], encoded.mask[0])
        length = max(self._text[c][0].shape[0] for c in captions)
        dim = self.plan.stage.text_dim
        emb = torch.zeros(len(captions), length, dim)
        mask = torch.zeros(len(captions), length, dtype=torch.bool)
        for i, caption in enumerate(captions):
            e, m = self._text[caption]
            emb[i, : e.shape[0]], mask[i, : m.shape[0]] = e, m
        return emb, mask

    def _example(
        self, rows: list[int], data: dict[str, Any], gen: torch.Generator, train: bool
    ) -> dict[str, torch.Tensor]:
        o, n_codes = self.plan.objective, 2**self.plan.stage.codebook_bits
        hr, lr = data["hr"][rows], data["lr"][rows].clone()
        b, n = hr.shape
        if train:
            ratio = torch.cos(math.pi / 2 * torch.rand(b, generator=gen))
        else:
            ratio = torch.full((b,), self.plan.eval.mask_ratio)
        count = (ratio * n).ceil().clamp(1, n)
        ranks = torch.rand(b, n, generator=gen).argsort(-1).argsort(-1)
        masked = ranks < count[:, None]
        lr_dropped = torch.zeros(b, dtype=torch.bool)
        text_kept = torch.ones(b, dtype=torch.bool)
        if train:
            share = torch.rand(b, 1, generator=gen) * o.lr_noise
            noisy = torch.rand(lr.shape, generator=gen) < share
            lr = torch.where(noisy, torch.randint(n_codes, lr.shape, generator=gen), lr)
            lr_dropped = torch.rand(b, generator=gen) < o.lr_drop
            text_kept = torch.rand(b, generator=gen) >= o.text_drop
        text, text_mask = self._encode_texts([data["captions"][r] for r in rows])
        return {
            "hr": hr,
            "masked": masked,
            "lr": lr,
            "lr_dropped": lr_dropped,
            "text": text,
            "text_mask": text_mask & text_kept[:, None],
        }

    def batches(self, step: int, micro: int = 0) -> dict[str, torch.Tensor]:
        draw = step * self.plan.train.grad_accum + micro  # micro-batch of train.grad_accum
        gen = torch.Generator().manual_seed(self.plan.train.seed * 1_000_003 + draw)
        size = self.plan.train.batch_size
        rows = torch.randint(len(self.train_set["indices"]), (size,), generator=gen).tolist()
        return self._example(rows, self.train_set, gen, train=True)

    def loss_fn(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict:
        from videopoet.plugins.superres.model import masked_loss

        stage = model.stages[0]
        logits = stage(
            batch["hr"],
            batch["lr"],
            batch["text"],
            batch["text_mask"],
            hr_masked=batch["masked"],
            lr_dropped=batch["lr_dropped"],
        )
        return masked_loss(logits, batch["hr"], batch["masked"], stage.factorization)

    # ------------------------------------------------------------------ evaluation

    def eval_fn(self, model: torch.nn.Module) -> dict[str, float]:
        gen = torch.Generator().manual_seed(12345)
        device = model.device
        losses, accuracies = [], []
        count = len(self.eval_set["indices"])
        for start in range(0, count, self.plan.train.batch_size):
            rows = list(range(start, min(count, start + self.plan.train.batch_size)))
            batch = self._example(rows, self.eval_set, gen, train=False)
            batch = {k: v.to(device) for k, v in batch.items()}
            out = self.loss_fn(model, batch)
            losses.append(float(out["loss"]))
            accuracies.append(float(out["accuracy"]))
        figures = {
            "token_loss": float(np.mean(losses)),
            "token_accuracy": float(np.mean(accuracies)),
        }
        if self.plan.eval.sample_clips:
            figures.update(self.sampled_figures(model))
        return figures

    def sampled_figures(self, model: Any, clips: int | None = None, **options: Any) -> dict:
        """PSNR, colour and position of the stage, of bicubic and of the tokenizer's ceiling on
        the first held-out clips (see the module docstring)."""
        from videopoet.data.evaluation import caption_matches, position_errors, psnr
        from videopoet.plugins.superres.refiner import resize

        plan = self.plan
        fmt, scale = plan.format, plan.stage.scale
        count = min(clips or plan.eval.sample_clips, len(self.eval_set["indices"]))
        rows: dict[str, list[dict[str, float]]] = {"superres": [], "bicubic": [], "tokenizer": []}
        for i in range(count):
            item = world.sample(
                self.eval_set["indices"][i], fmt.frames, fmt.height, fmt.width, plan.data.world()
            )
            truth = item.video[None]
            low = resize(truth, 1 / scale)
            lr_ids = self.eval_set["lr"][i : i + 1]
            hr_ids = self.eval_set["hr"][i : i + 1]
            with torch.no_grad():
                decoded_lr = self.tokenizer.decode(lr_ids, plan.stage.lr_grid).clamp(-1, 1)
                ceiling = self.tokenizer.decode(hr_ids, plan.stage.grid).clamp(-1, 1)
            outputs = {
                "superres": model.run(
                    self.tokenizer,
                    plan.spec,
                    low,
                    text=item.caption,
                    seed=i,
                    registry=plan.registry,
                    **options,
                ),
                "bicubic": resize(decoded_lr.float(), scale),
                "tokenizer": ceiling.float(),
            }
            for name, video in outputs.items():
                errors = position_errors(video[0], item)
                found = np.isfinite(errors)
                rows[name].append(
                    {
                        "psnr": psnr(video, truth),
                        "color": caption_matches(video[0], item)["color"],
                        "position": float(errors[found].mean()) if found.any() else math.nan,
                    }
                )
        out = {}
        for name, values in rows.items():
            out[f"{name}_psnr"] = float(np.mean([r["psnr"] for r in values]))
            out[f"{name}_color_acc"] = float(np.mean([r["color"] for r in values]))
            positions = [r["position"] for r in values if math.isfinite(r["position"])]
            out[f"{name}_position_error"] = float(np.mean(positions)) if positions else math.nan
        return out

    def finish(self, model: torch.nn.Module, out_dir: Path) -> dict[str, Any]:
        path = model.save_pretrained(out_dir / RESULT_DIR)
        return {"refiner_dir": str(path), "parameters": model.stages[0].num_parameters()}


def train_refiner(raw: dict[str, Any], prepare_only: bool = False) -> dict[str, Any]:
    """Train from an already loaded config dict; returns the trainer's result + the folder.
    ``prepare_only``: tokenize the clips into ``out_dir/tokens/`` and stop."""
    plan = Plan(raw)
    check_resume_config(plan.train, plan.run_config())
    out_dir = ensure_out_dir(plan.train.out_dir)
    prepare_run(plan.train)  # the stage's initial weights come from train.seed
    adapter = SuperResTraining(plan, out_dir)
    if prepare_only:
        return {
            "tokens": str(out_dir / TOKENS_DIR),
            "train_clips": len(adapter.train_set["indices"]),
            "eval_clips": len(adapter.eval_set["indices"]),
            "parameters": adapter.model.stages[0].num_parameters(),
        }
    result = train(
        adapter.model,
        adapter.loss_fn,
        adapter.batches,
        plan.train,
        eval_fn=adapter.eval_fn,
        model_config=adapter.model_config,
        run_config=plan.run_config(),
    )
    if is_main_process():
        result.update(adapter.finish(adapter.model, out_dir))
    barrier()
    return result


def evaluate_run(
    raw: dict[str, Any], clips: int, sampling: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The figures of the run's newest checkpoint on ``clips`` held-out clips, sampled with
    the stage's defaults overridden by ``sampling`` (``temperature``, ``text_scale``, ...)."""
    from videopoet.core.training import latest_checkpoint, load_checkpoint_weights

    plan = Plan(raw)
    out_dir = Path(plan.train.out_dir)
    checkpoint = latest_checkpoint(out_dir)
    if checkpoint is None:
        raise ConfigError("train.out_dir", str(out_dir), "a run with at least one checkpoint")
    adapter = SuperResTraining(plan, out_dir)
    adapter.model.load_state_dict(load_checkpoint_weights(checkpoint))
    adapter.model.eval()
    began = time.perf_counter()
    with torch.no_grad():
        figures = adapter.sampled_figures(adapter.model, clips, **(sampling or {}))
    return {
        "checkpoint": str(checkpoint),
        "clips": min(clips, len(adapter.eval_set["indices"])),
        "sampling": {
            k: (sampling or {}).get(k, getattr(adapter.stage_config, k))
            for k in ("steps", "text_scale", "lr_scale", "temperature", "choice_temperature")
        },
        **figures,
        "seconds": round(time.perf_counter() - began, 1),
    }


def train_refiner_from_yaml(
    path: str, overrides: list[str] | None = None, prepare_only: bool = False
) -> dict[str, Any]:
    """The ``videopoet train-refiner CONFIG.yaml [key=value ...]`` entry."""
    return train_refiner(load_config(path, overrides), prepare_only)


def validate_config(path: str, overrides: list[str] | None = None) -> Plan:
    """Parse and check a config without loading weights or data (tests, ``--check``)."""
    return Plan(load_config(path, overrides))
