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

log = logging.getLogger(__name__)
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".mp4", ".mkv", ".webm", ".mov")


class AudioDataConfig(BaseModel):
    """The ``data:`` section: where the recordings come from and how they are cut."""

    model_config = ConfigDict(extra="forbid")

    dataset: Literal["samples", "folder"] = "samples"
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


class AudioLossConfig(BaseModel):
    """The ``loss:`` section: weights of the reconstruction terms."""

    model_config = ConfigDict(extra="forbid")

    waveform_weight: float = Field(0.1, ge=0)
    spectral_weight: float = Field(1.0, ge=0)
    commitment_weight: float = Field(1.0, ge=0)


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
    """Every file as mono audio at ``sample_rate``; unreadable ones skipped and reported."""
    from tqdm.auto import tqdm

    from videopoet.data.media import MediaError, read_audio

    clips, skipped = [], []
    for path in tqdm(files, desc="read audio", disable=not progress):
        try:
            audio = read_audio(path, sample_rate)
        except MediaError as exc:
            skipped.append((str(path), exc.detail))
            continue
        if audio.shape[-1] > 0:
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

        files = _files(self.data)
        held = set(range(0, len(files), self.data.holdout_every))
        train_files = [f for i, f in enumerate(files) if i not in held]
        eval_files = [f for i, f in enumerate(files) if i in held]
        self.train_audio, self.skipped = load_recordings(
            train_files, self.sample_rate, train.progress
        )
        eval_audio, skipped = load_recordings(eval_files, self.sample_rate, train.progress)
        self.skipped += skipped
        if not self.train_audio or not eval_audio:
            raise ConfigError("data", self.data.dataset, "readable audio for training and eval")
        self.eval_batch = self._eval_clips(eval_audio)
        self._weights = torch.tensor([a.shape[-1] for a in self.train_audio], dtype=torch.float)
        self.crop = round(self.data.seconds * self.sample_rate)
        self.baseline = self._baseline(Path(train.out_dir))

    # ------------------------------------------------------------------ data

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

    def batches(self, step: int) -> torch.Tensor:
        """A (batch, 1, crop) tensor of random crops; the same for the same step and seed."""
        gen = torch.Generator().manual_seed(self.data.seed * 1_000_003 + step)
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

    def loss_fn(self, model: torch.nn.Module, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        out = model(batch)
        self.criterion.to(batch.device)
        loss, parts = self.criterion(out.reconstruction, out.target, out.commitment)
        return {"loss": loss, **{k: torch.tensor(v) for k, v in parts.items()}}

    def evaluate(self, model: Any) -> dict[str, float]:
        """Spectral distance of encode → decode on the held-out clips, and codebook use."""
        device = next(model.parameters()).device
        clips = self.eval_batch.to(device)
        codes = model.encode_codes(clips)
        recon = model.decode_codes(codes)
        used = len(torch.unique(codes[:, 0])) / model.config.codebook_size
        return {
            "spectral_distance": spectral_distance(recon, clips, self.sample_rate),
            "level0_codes_used": used,
        }

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
            untrained(self.batches(0))  # k-means initialisation of the codebooks, as step 0
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
            "skipped_files": self.skipped,
        }


def training_adapter(tokenizer: Any, data: dict, loss: dict, train: TrainConfig) -> Any:
    return EncodecTrainingAdapter(tokenizer, data, loss, train)
