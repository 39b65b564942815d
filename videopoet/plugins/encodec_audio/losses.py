"""Reconstruction losses and the spectral distance used to judge an audio tokenizer.

Following EnCodec (Défossez et al. 2022, 3.4): an L1 loss on the waveform plus, at several
STFT resolutions (windows 2^6 … 2^11, hop = window / 4), L1 and L2 losses between mel
spectrograms. The adversarial and feature-matching losses of EnCodec are left out: they need
a discriminator whose training is out of scope here (the loss weights are in the config).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _mel(sample_rate: int, n_fft: int, n_mels: int) -> nn.Module:
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate,
        n_fft=n_fft,
        win_length=n_fft,
        hop_length=n_fft // 4,
        # Fewer bands for short windows: a band narrower than one FFT bin would be empty.
        n_mels=min(n_mels, n_fft // 8),
        power=1.0,
        normalized=True,  # magnitudes independent of the window length: resolutions weigh alike
        center=True,
    )


class MultiResolutionMelLoss(nn.Module):
    """Mean over resolutions of L1(mel) + L2(log mel) between two waveforms (B, C, T);
    :meth:`terms` gives the two parts apart."""

    def __init__(
        self,
        sample_rate: int,
        n_ffts: Sequence[int] = (64, 128, 256, 512, 1024, 2048),
        n_mels: int = 64,
    ) -> None:
        super().__init__()
        self.mels = nn.ModuleList(_mel(sample_rate, n, n_mels) for n in n_ffts)

    def terms(
        self, estimate: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean L1 of mel magnitudes, mean L2 of log mels) over the resolutions."""
        linear = log = estimate.new_zeros(())
        for mel in self.mels:
            a, b = mel(estimate.float()), mel(target.float())
            linear = linear + F.l1_loss(a, b)
            log = log + F.mse_loss(_log(a), _log(b))
        return linear / len(self.mels), log / len(self.mels)

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        linear, log = self.terms(estimate, target)
        return linear + log


class AudioReconstructionLoss(nn.Module):
    """Weighted sum of waveform L1, multi-resolution mel and commitment losses.

    ``waveform_weight * L1(wave) + spectral_weight * (L1(mel) + w_log(step) * L2(log mel))
    + commitment_weight * commitment``, where ``w_log`` is ``log_spectral_weight`` from step
    ``log_spectral_start`` on (ramped in linearly over ``log_spectral_ramp`` steps) and 0
    before. The log term is phase-blind and dominated by the near-silent mel bands: from the
    first step it steers a freshly built codec into one fixed tone that ignores its input (see
    docs/audio-tokenizer.md), so a run can start on the waveform and mel magnitudes alone.
    """

    def __init__(
        self,
        sample_rate: int,
        waveform_weight: float = 0.1,
        spectral_weight: float = 1.0,
        commitment_weight: float = 1.0,
        log_spectral_weight: float = 1.0,
        log_spectral_start: int = 0,
        log_spectral_ramp: int = 0,
    ) -> None:
        super().__init__()
        self.spectral = MultiResolutionMelLoss(sample_rate)
        self.weights = (waveform_weight, spectral_weight, commitment_weight)
        self.log_schedule = (log_spectral_weight, log_spectral_start, log_spectral_ramp)

    def log_weight(self, step: int | None) -> float:
        """Weight of the log-mel term at optimizer step ``step`` (None: fully on)."""
        weight, start, ramp = self.log_schedule
        if step is None:
            return weight
        if step < start:
            return 0.0
        return weight * min(1.0, (step - start + 1) / ramp) if ramp else weight

    def forward(
        self,
        estimate: torch.Tensor,
        target: torch.Tensor,
        commitment: torch.Tensor,
        step: int | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        wave = F.l1_loss(estimate, target)
        linear, log = self.spectral.terms(estimate, target)
        w_wave, w_spec, w_commit = self.weights
        w_log = self.log_weight(step)
        spec = linear + w_log * log
        loss = w_wave * wave + w_spec * spec + w_commit * commitment
        parts = {
            "waveform_l1": float(wave.detach()),
            "spectral": float(spec.detach()),
            "mel_l1": float(linear.detach()),
            "log_mel_l2": float(log.detach()),
            "commitment": float(commitment.detach()),
        }
        return loss, parts


@torch.no_grad()
def spectral_distance(
    estimate: torch.Tensor, target: torch.Tensor, sample_rate: int, n_fft: int = 1024
) -> float:
    """Mean absolute difference of log-mel spectrograms (64 bands), in natural-log units.

    Lower is better; 0 is a perfect copy. Both inputs are cut to the shorter length.
    """
    length = min(estimate.shape[-1], target.shape[-1])
    mel = _mel(sample_rate, n_fft, 64).to(target.device)
    a = mel(estimate[..., :length].float())
    b = mel(target[..., :length].float())
    return float((_log(a) - _log(b)).abs().mean())


def _log(spec: torch.Tensor) -> torch.Tensor:
    return torch.log(spec.clamp_min(1e-5))
