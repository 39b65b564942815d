"""Training the audio tokenizer through ``videopoet train-tokenizer`` (the shared loop).

:meth:`EncodecTokenizer.training_adapter` returns :class:`EncodecTrainingAdapter`, which
:mod:`videopoet.core.tokenizer_training` drives: random crops of real recordings as batches,
waveform + multi-resolution mel + commitment losses, and as evaluation the log-mel spectral
distance of encode → decode on clips of held-out files (2.125 s each, the paper's clip).

Before the first step the adapter measures the same distance for the untrained network (its
codebooks k-means-initialised on the first batch, as step 0 does), so every run states how
much training improved reconstruction (``baseline.json`` and the result's figures).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from videopoet.core.errors import ConfigError
from videopoet.core.serialization import load_json, save_json
from videopoet.core.tokenizer_training import validate_section
from videopoet.core.training import TrainConfig
from videopoet.plugins.encodec_audio.losses import AudioReconstructionLoss, spectral_distance
from videopoet.plugins.encodec_audio.metrics import codebook_usage, pitch_agreement

log = logging.getLogger(__name__)
#: Suffixes of files a ``dataset: folder`` reads: audio files and every common container that
#: PyAV (FFmpeg) opens and that may carry sound. A video without an audio stream is skipped
#: with a warning when it is read (:func:`load_recordings`), never silently.
AUDIO_SUFFIXES = (
    # audio
    ".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aif", ".aiff",
    ".aifc", ".wma", ".ac3", ".amr", ".au", ".caf", ".mka", ".spx", ".wv",
    # video containers that may hold an audio stream
    ".mp4", ".m4v", ".mkv", ".webm", ".mov", ".avi", ".mpg", ".mpeg", ".ts", ".mts",
    ".m2ts", ".flv", ".wmv", ".asf", ".3gp", ".3g2", ".ogv", ".vob",
)  # fmt: skip


class AudioDataConfig(BaseModel):
    """The ``data:`` section: where the recordings come from and how they are cut."""

    model_config = ConfigDict(extra="forbid")

    #: ``world``: the built-in synthetic world's sound tracks (:mod:`videopoet.data.world`),
    #: training crops from sample indices drawn per step, evaluation on held-out indices
    dataset: Literal["samples", "folder", "world"] = "samples"
    #: with ``dataset: samples``: which fetched sample sets to use
    sources: tuple[Literal["speech", "music"], ...] = ("speech", "music")
    #: with ``dataset: folder``: a folder of audio (or video) files, searched recursively
    root: str | None = None
    seconds: float = Field(1.0, gt=0, description="length of a training crop")
    eval_clips: int = Field(8, ge=1)
    eval_seconds: float = Field(2.125, gt=0)
    #: every n-th file (sorted by name) is held out for evaluation
    holdout_every: int = Field(10, ge=2)
    max_files: int | None = Field(None, ge=2)
    seed: int = 0
    #: with ``dataset: world``: overrides of :class:`videopoet.data.world.WorldConfig`
    #: (``seed``, ``shapes``, ``motions``, ...)
    world: dict[str, Any] = Field(default_factory=dict)
    #: with ``dataset: world``: length of the world clips the training crops are cut from
    world_clip_seconds: float = Field(2.125, gt=0)


class AudioLossConfig(BaseModel):
    """The ``loss:`` section: weights of the reconstruction terms."""

    model_config = ConfigDict(extra="forbid")

    waveform_weight: float = Field(0.1, ge=0)
    spectral_weight: float = Field(1.0, ge=0)
    commitment_weight: float = Field(1.0, ge=0)
    #: weight of the log-mel L2 term inside the spectral loss, and the optimizer step from which
    #: it is used (ramped in over ``log_spectral_ramp`` steps); see AudioReconstructionLoss
    log_spectral_weight: float = Field(1.0, ge=0)
    log_spectral_start: int = Field(0, ge=0)
    log_spectral_ramp: int = Field(0, ge=0)


def _files(data: AudioDataConfig) -> list[Path]:
    if data.dataset == "folder":
        if data.root is None or not Path(data.root).is_dir():
            raise ConfigError("data.root", data.root, "an existing folder of audio files")
        files = [
            p for p in sorted(Path(data.root).rglob("*")) if p.suffix.lower() in AUDIO_SUFFIXES
        ]
    else:
        from videopoet.data.samples import music_clips, speech_clips

        files = []
        if "speech" in data.sources:
            files += [path for path, _ in speech_clips()]
        if "music" in data.sources:
            files += music_clips()
        files.sort(key=lambda p: p.name)
    if data.max_files is not None:
        # spread the subset over the whole sorted list rather than the first names only
        stride = max(1, len(files) // data.max_files)
        files = files[::stride][: data.max_files]
    if len(files) < 2:
        raise ConfigError("data", data.dataset, "at least 2 readable audio files")
    return files


def load_recordings(
    files: list[Path], sample_rate: int, progress: bool = True
) -> tuple[list[torch.Tensor], list[tuple[str, str]]]:
    """Every file as mono audio at ``sample_rate``; files that are unreadable or hold no
    audio (a video without sound) are skipped, each reported by a logged warning."""
    from tqdm.auto import tqdm

    from videopoet.data.media import MediaError, read_audio

    clips, skipped = [], []
    for path in tqdm(files, desc="read audio", disable=not progress):
        try:
            audio = read_audio(path, sample_rate)
        except MediaError as exc:
            skipped.append((str(path), exc.detail))
            continue
        if audio.shape[-1] == 0:
            skipped.append((str(path), "has no audio samples"))
            continue
        clips.append(audio)
    for path, why in skipped:
        log.warning("skipping %s: %s", path, why)
    return clips, skipped


class EncodecTrainingAdapter:
    """What :func:`videopoet.core.tokenizer_training.train_tokenizer` needs for EnCodec."""

    def __init__(self, tokenizer: Any, data: dict, loss: dict, train: TrainConfig) -> None:
        from videopoet.plugins.encodec_audio.model import KIND

        self.data = validate_section(AudioDataConfig, data, "data")
        self.loss_config = validate_section(AudioLossConfig, loss, "loss")
        self.train_config = train
        self.model = tokenizer
        self.model_config = {"kind": KIND, **tokenizer.config.model_dump(mode="json")}
        self.sample_rate = tokenizer.sample_rate
        self.criterion = AudioReconstructionLoss(self.sample_rate, **self.loss_config.model_dump())

        self.crop = round(self.data.seconds * self.sample_rate)
        self.world = None
        self.skipped: list[tuple[str, str]] = []
        if self.data.dataset == "world":
            self._init_world()
        else:
            self._init_files(train.progress)
        self.baseline = self._baseline(Path(train.out_dir))

    # ------------------------------------------------------------------ data

    def _init_files(self, progress: bool) -> None:
        files = _files(self.data)
        held = set(range(0, len(files), self.data.holdout_every))
        train_files = [f for i, f in enumerate(files) if i not in held]
        eval_files = [f for i, f in enumerate(files) if i in held]
        self.train_audio, self.skipped = load_recordings(train_files, self.sample_rate, progress)
        eval_audio, skipped = load_recordings(eval_files, self.sample_rate, progress)
        self.skipped += skipped
        if not self.train_audio or not eval_audio:
            raise ConfigError("data", self.data.dataset, "readable audio for training and eval")
        self.eval_batch = self._eval_clips(eval_audio)
        self._weights = torch.tensor([a.shape[-1] for a in self.train_audio], dtype=torch.float)

    def _init_world(self) -> None:
        """The synthetic world: held-out clips ``EVAL_OFFSET + i`` of ``eval_seconds``."""
        from videopoet.data import world

        self.world = validate_section(
            world.WorldConfig, {**self.data.world, "sample_rate": self.sample_rate}, "data.world"
        )
        if self.data.world_clip_seconds < self.data.seconds:
            raise ConfigError(
                "data.world_clip_seconds",
                self.data.world_clip_seconds,
                f">= data.seconds={self.data.seconds}",
            )
        held = [world.EVAL_OFFSET + i for i in range(self.data.eval_clips)]
        self.eval_batch = world.audio_batch(held, self.data.eval_seconds, self.world)

    def _world_batch(self, step: int) -> torch.Tensor:
        """Crops of world samples ``step * batch + i`` (each training sample is seen once),
        at a start drawn from ``(data.seed, step)``: the same batch for the same step."""
        from videopoet.data import world

        size = self.train_config.batch_size
        indices = [(step * size + i) % world.EVAL_OFFSET for i in range(size)]
        clips = world.audio_batch(indices, self.data.world_clip_seconds, self.world)
        gen = torch.Generator().manual_seed(self.data.seed * 1_000_003 + step)
        room = clips.shape[-1] - self.crop
        starts = torch.randint(0, room + 1, (size,), generator=gen).tolist()
        return torch.stack([c[:, s : s + self.crop] for c, s in zip(clips, starts, strict=True)])

    def _eval_clips(self, audio: list[torch.Tensor]) -> torch.Tensor:
        """Up to ``eval_clips`` held-out clips of ``eval_seconds``, the loudest stretch of each
        file, zero-padded when a file is shorter (the padding must decode to silence too)."""
        length = round(self.data.eval_seconds * self.sample_rate)
        clips = []
        for wav in audio[: self.data.eval_clips]:
            if wav.shape[-1] > length:
                energy = wav.pow(2).cumsum(-1)
                window = energy[0, length:] - energy[0, :-length]
                start = int(window.argmax())
                wav = wav[:, start : start + length]
            clips.append(torch.nn.functional.pad(wav, (0, length - wav.shape[-1])))
        return torch.stack(clips)

    def batches(self, step: int, micro: int = 0) -> dict[str, Any]:
        """``{"audio": (batch, 1, crop) random crops, "step": step}``; the same for the same
        step, micro-batch and seed (the step schedules the loss, see
        ``loss.log_spectral_start``; micro-batch ``micro`` of ``train.grad_accum`` draws the
        crops of draw ``step × grad_accum + micro``)."""
        return {"audio": self._crops(step * self.train_config.grad_accum + micro), "step": step}

    def _crops(self, draw: int) -> torch.Tensor:
        if self.world is not None:
            return self._world_batch(draw)
        gen = torch.Generator().manual_seed(self.data.seed * 1_000_003 + draw)
        picks = torch.multinomial(self._weights, self.train_config.batch_size, True, generator=gen)
        out = []
        for index in picks.tolist():
            wav = self.train_audio[index]
            room = wav.shape[-1] - self.crop
            start = int(torch.randint(0, room + 1, (1,), generator=gen)) if room > 0 else 0
            piece = wav[:, start : start + self.crop]
            out.append(torch.nn.functional.pad(piece, (0, self.crop - piece.shape[-1])))
        return torch.stack(out)

    # ------------------------------------------------------------------ loss and eval

    def loss_fn(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        audio = batch["audio"]
        out = model(audio)
        self.criterion.to(audio.device)
        loss, parts = self.criterion(
            out.reconstruction, out.target, out.commitment, step=batch.get("step")
        )
        return {"loss": loss, **{k: torch.tensor(v) for k, v in parts.items()}}

    def evaluate(self, model: Any) -> dict[str, float]:
        """On the held-out clips, encode → decode: log-mel spectral distance, the pitch of the
        reconstruction against the original's (:func:`.metrics.pitch_agreement`) and, for
        every RVQ level, the fraction of its codes used and their perplexity."""
        device = next(model.parameters()).device
        clips = self.eval_batch.to(device)
        codes = model.encode_codes(clips)
        recon = model.decode_codes(codes)
        usage = codebook_usage(codes, model.config.codebook_size)
        figures = {"spectral_distance": spectral_distance(recon, clips, self.sample_rate)}
        for level, (used, ppl) in enumerate(zip(usage["used"], usage["perplexity"], strict=True)):
            figures[f"codes_used_level{level}"] = used
            figures[f"perplexity_level{level}"] = ppl
        figures.update(pitch_agreement(recon.cpu(), clips.cpu(), self.sample_rate))
        return figures

    def eval_fn(self, model: torch.nn.Module) -> dict[str, float]:
        return self.evaluate(model)

    def _baseline(self, out_dir: Path) -> dict[str, float]:
        path = out_dir / "baseline.json"
        if path.is_file():  # a resumed run keeps the figure of its first start
            return load_json(path)
        # legacy weight_norm modules cannot be deep-copied: rebuild and copy the weights
        untrained = type(self.model)(self.model.config)
        untrained.load_state_dict(self.model.state_dict())
        untrained.train()
        with torch.no_grad():
            untrained(self._crops(0))  # k-means initialisation of the codebooks, as step 0
        untrained.eval()
        figures = self.evaluate(untrained)
        save_json(path, figures)
        return figures

    def finish(self, model: Any, out_dir: Path) -> dict[str, Any]:
        model.eval()
        final = self.evaluate(model)
        directory = model.save_pretrained(Path(out_dir) / "tokenizer")
        before, after = self.baseline["spectral_distance"], final["spectral_distance"]
        return {
            "tokenizer_dir": str(directory),
            "eval_clips": int(self.eval_batch.shape[0]),
            "spectral_distance_untrained": before,
            "spectral_distance_trained": after,
            "spectral_improvement": 1.0 - after / before if before > 0 else math.nan,
            "eval_untrained": dict(self.baseline),
            "eval_trained": final,
            "skipped_files": self.skipped,
        }


def training_adapter(tokenizer: Any, data: dict, loss: dict, train: TrainConfig) -> Any:
    return EncodecTrainingAdapter(tokenizer, data, loss, train)
