"""Figures that judge an audio tokenizer beyond its loss: codebook use and pitch agreement.

- :func:`codebook_usage`: per RVQ level, the fraction of the codes used on a set of clips and
  the perplexity of their histogram (``exp`` of its entropy: 1 when one code takes every frame,
  ``codebook_size`` when all are equally used). A collapsed level shows a usage of 1-2 codes.
- :func:`pitch_track`: a small YIN-style fundamental-frequency estimate per 20 ms frame (the
  cumulative-mean-normalised difference function, first dip under a threshold, parabolic
  refinement), with a periodicity figure in ``[0, 1]`` per frame (1: perfectly periodic).
- :func:`pitch_agreement`: the Pearson correlation of the log-pitch of a reconstruction with
  that of the original over the original's voiced frames (the reconstruction's estimate is
  taken on those frames whether or not it looks voiced itself, so silence or noise in the
  reconstruction counts against it).
"""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def codebook_usage(codes: torch.Tensor, codebook_size: int) -> dict[str, list[float]]:
    """``codes`` (B, levels, frames) → ``{"used": [...], "perplexity": [...]}`` per level."""
    used, perplexity = [], []
    for level in range(codes.shape[1]):
        counts = torch.bincount(codes[:, level].reshape(-1).cpu(), minlength=codebook_size)
        p = counts.double() / counts.sum().clamp_min(1)
        entropy = -(p[p > 0] * p[p > 0].log()).sum()
        used.append(float((counts > 0).sum()) / codebook_size)
        perplexity.append(float(entropy.exp()))
    return {"used": used, "perplexity": perplexity}


@torch.no_grad()
def pitch_track(
    wav: torch.Tensor,
    sample_rate: int = 16_000,
    hop: int = 320,
    window: int = 512,
    fmin: float = 150.0,
    fmax: float = 1000.0,
    threshold: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fundamental frequency (Hz) and periodicity per frame of ``wav`` (B, samples) or
    (B, 1, samples): two (B, frames) tensors, frame ``i`` starting at sample ``i * hop``.

    YIN (de Cheveigné & Kawahara 2002) without its last refinements: d(τ) is the squared
    difference of the frame with itself shifted by τ, normalised by its running mean; the
    estimate is the first τ in [sr / fmax, sr / fmin] where it dips under ``threshold`` (else
    its minimum), refined by a parabola. Periodicity is ``1 - d(τ)`` clipped to [0, 1].
    """
    wav = wav.float().reshape(wav.shape[0], -1)
    lo, hi = max(2, int(sample_rate / fmax)), int(math.ceil(sample_rate / fmin)) + 1
    span = window + hi + 1
    if wav.shape[-1] < span:
        wav = torch.nn.functional.pad(wav, (0, span - wav.shape[-1]))
    frames = (wav.shape[-1] - span) // hop + 1
    x = wav.unfold(-1, span, hop)[:, :frames]  # (B, F, span)
    head = x[..., :window]
    # d(τ) = Σ (x_j - x_{j+τ})² for τ = 0 .. hi
    diffs = torch.stack(
        [(head - x[..., tau : tau + window]).pow(2).sum(-1) for tau in range(hi + 1)], -1
    )
    taus = torch.arange(1, hi + 1, dtype=diffs.dtype)
    cmnd = diffs[..., 1:] * taus / diffs[..., 1:].cumsum(-1).clamp_min(1e-12)
    cmnd = torch.cat([torch.ones_like(cmnd[..., :1]), cmnd], -1)  # index = τ
    search = cmnd[..., lo : hi + 1]
    below = search < threshold
    # first dip under the threshold, then walk to its local minimum
    first = torch.where(below.any(-1), below.float().argmax(-1), search.argmin(-1))
    idx = first.clone()
    for _ in range(hi - lo):
        nxt = (idx + 1).clamp_max(search.shape[-1] - 1)
        better = (
            search.gather(-1, nxt[..., None])[..., 0] < search.gather(-1, idx[..., None])[..., 0]
        )
        if not better.any():
            break
        idx = torch.where(better, nxt, idx)
    tau = (idx + lo).long()
    prev = cmnd.gather(-1, (tau - 1)[..., None])[..., 0]
    here = cmnd.gather(-1, tau[..., None])[..., 0]
    nxt = cmnd.gather(-1, (tau + 1).clamp_max(hi)[..., None])[..., 0]
    denom = prev - 2 * here + nxt
    shift = torch.where(denom.abs() > 1e-9, 0.5 * (prev - nxt) / denom, torch.zeros_like(here))
    refined = tau.to(here.dtype) + shift.clamp(-1, 1)
    f0 = sample_rate / refined
    periodicity = (1 - here).clamp(0, 1)
    return f0, periodicity


@torch.no_grad()
def pitch_agreement(
    reconstruction: torch.Tensor,
    original: torch.Tensor,
    sample_rate: int = 16_000,
    voiced_threshold: float = 0.8,
    min_rms: float = 0.01,
) -> dict[str, float]:
    """Pitch of a reconstruction against its original, on the original's voiced frames.

    Returns ``pitch_correlation`` (Pearson of log2 f0), ``pitch_error_semitones`` (median
    absolute difference) and ``voiced_frames`` (how many frames were compared).
    """
    length = min(reconstruction.shape[-1], original.shape[-1])
    a = reconstruction[..., :length].reshape(reconstruction.shape[0], -1)
    b = original[..., :length].reshape(original.shape[0], -1)
    f_rec, _ = pitch_track(a, sample_rate)
    f_orig, periodic = pitch_track(b, sample_rate)
    hop, window = 320, 512
    frames = f_orig.shape[-1]
    rms = b.unfold(-1, window, hop)[:, :frames].pow(2).mean(-1).sqrt()
    voiced = (periodic > voiced_threshold) & (rms[:, : periodic.shape[-1]] > min_rms)
    if voiced.sum() < 3:
        return {
            "pitch_correlation": math.nan,
            "pitch_error_semitones": math.nan,
            "voiced_frames": 0.0,
        }
    x, y = f_rec[voiced].log2(), f_orig[voiced].log2()
    corr = torch.corrcoef(torch.stack([x, y]))[0, 1]
    error = (12 * (x - y)).abs().median()
    return {
        "pitch_correlation": float(corr) if torch.isfinite(corr) else 0.0,
        "pitch_error_semitones": float(error),
        "voiced_frames": float(voiced.sum()),
    }
