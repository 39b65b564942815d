"""How well the committed tokenizers reconstruct held-out samples of the world.

    python benchmarks/tokenizer_quality.py [--clips 64] [--format 17x64x64]
        [--visual checkpoints/magvit2_tiny_world] [--audio checkpoints/encodec16k_tiny_world]

(``--visual none`` or ``--audio none`` leaves one out.)

Held-out world samples (indices from ``world.EVAL_OFFSET``) go through encode → decode, and
the analyser (no pretrained network) reads the original and the reconstruction:

- visual: PSNR (dB, on the [0, 1] scale) against the trivial baseline in the same run (every
  pixel its frame's mean colour), colour agreement (the analyser names the same colour on the
  original and the reconstruction, per clip), position error (pixels between the analyser's
  centres on original and reconstruction, mean over frames), codebook usage (share of the
  ``2^K`` codes used on the held-out set); for clips also the motion agreement (the
  analyser's motion class of the reconstruction = the original's: the ceiling of an LM's
  text-to-video direction accuracy), the main object's last-frame size in the reconstruction
  over the original's (median; below 1 when a moving object fades in later latent frames),
  and the PSNR of the first and the last frame;
- audio: codebook usage per RVQ level (the minimum is reported), pitch correlation (Pearson
  of the analyser's log-pitch of original vs reconstruction, pooled over the voiced frames of
  every clip: a still object has a constant pitch, so per-clip correlations are undefined),
  and the log-mel spectral distance.

The same figures for the untrained networks (same architecture, random weights) are printed
beside them. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _format(text: str) -> tuple[int, int, int]:
    try:
        frames, height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(
            f"error: --format={text!r}: expected FRAMESxHEIGHTxWIDTH, e.g. 17x64x64"
        ) from None
    return frames, height, width


def _psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mse = ((a - b) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


@torch.no_grad()
def visual_figures(tokenizer, samples, fmt, batch: int = 8) -> dict[str, float]:
    from videopoet.data.analyser import analyse_video

    videos = torch.stack([s.video for s in samples])
    shape = tokenizer.latent_shape(*fmt)
    recon, ids = [], []
    for start in range(0, len(videos), batch):
        chunk = videos[start : start + batch]
        codes = tokenizer.encode(chunk)
        ids.append(codes)
        recon.append(tokenizer.decode(codes, shape))
    recon_all, ids_all = torch.cat(recon), torch.cat(ids)
    mean = videos.mean(dim=(3, 4), keepdim=True).expand_as(videos)
    agree, motion, last_size, errors = [], [], [], []
    for original, rebuilt in zip(videos, recon_all, strict=True):
        a, b = analyse_video(original), analyse_video(rebuilt)
        agree.append(a.color is not None and a.color == b.color)
        motion.append(a.motion is not None and a.motion == b.motion)
        if a.present[-1] and b.present[-1]:
            last_size.append(b.sizes[-1] / a.sizes[-1])
        both = a.present & b.present
        err = np.linalg.norm(a.centers[both] - b.centers[both], axis=1) if both.any() else []
        # a frame where the reconstruction lost the object counts as a miss of half the frame
        missed = int((a.present & ~b.present).sum())
        errors.extend(list(err) + [0.5 * min(fmt[1:])] * missed)
    used = torch.unique(ids_all).numel() / tokenizer.codebook_size
    mse = ((videos - recon_all) / 2).pow(2).mean(dim=(1, 3, 4))  # (clips, frames)
    per_frame = 10 * torch.log10(1 / mse.clamp_min(1e-10))
    motion_figures = {}
    if videos.shape[2] > 1:  # a clip, not images: does the decoder keep the motion?
        motion_figures = {
            # the analyser's motion class of the reconstruction = the original's: what caps
            # an LM's text-to-video direction accuracy (every generated clip is decoded)
            "visual_motion_agreement": float(np.mean(motion)),
            # median size of the main object in the last frame, reconstruction / original:
            # below 1 when a moving object fades or lags in the later latent frames
            "visual_last_frame_size_ratio": float(np.median(last_size)) if last_size else math.nan,
            "visual_psnr_first_frame": float(per_frame[:, 0].mean()),
            "visual_psnr_last_frame": float(per_frame[:, -1].mean()),
        }
    return {
        "visual_psnr": float(_psnr(videos, recon_all).mean()),
        "visual_baseline_psnr": float(_psnr(videos, mean).mean()),
        "visual_color_agreement": float(np.mean(agree)),
        "visual_position_error_px": float(np.mean(errors)) if errors else math.nan,
        "visual_codebook_usage": used,
        "visual_codes_used": int(torch.unique(ids_all).numel()),
        **motion_figures,
    }


@torch.no_grad()
def audio_figures(tokenizer, samples) -> dict[str, float]:
    from videopoet.data.analyser import analyse_audio
    from videopoet.plugins.encodec_audio.losses import spectral_distance

    audio = torch.stack([s.audio for s in samples])
    codes = tokenizer.encode_codes(audio)
    recon = tokenizer.decode_codes(codes)
    size = tokenizer.config.codebook_size
    usage = [torch.unique(codes[:, level]).numel() / size for level in range(codes.shape[1])]
    originals, rebuilt = [], []
    for a, b in zip(audio, recon, strict=True):
        pa = analyse_audio(a[0, : b.shape[-1]]).pitch_hz
        pb = analyse_audio(b[0]).pitch_hz
        n = min(len(pa), len(pb))
        originals.append(pa[:n])
        rebuilt.append(pb[:n])
    pa, pb = np.log2(np.concatenate(originals)), np.log2(np.concatenate(rebuilt))
    # frames voiced in the original; an unvoiced reconstruction there counts as a miss
    voiced = np.isfinite(pa)
    hit = voiced & np.isfinite(pb)
    corr = float(np.corrcoef(pa[hit], pb[hit])[0, 1]) if hit.sum() > 2 else math.nan
    return {
        "audio_codebook_usage": min(usage),
        "audio_codebook_usage_per_level": usage,
        "audio_pitch_corr": corr,
        "audio_voiced_kept": float(hit.sum() / max(1, voiced.sum())),
        "audio_spectral_distance": spectral_distance(recon, audio, tokenizer.sample_rate),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--format", default="17x64x64", help="FRAMESxHEIGHTxWIDTH")
    parser.add_argument("--visual", default=str(ROOT / "checkpoints" / "magvit2_tiny_world"))
    parser.add_argument("--audio", default=str(ROOT / "checkpoints" / "encodec16k_tiny_world"))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    fmt = _format(args.format)

    from videopoet.data.world import EVAL_OFFSET, sample
    from videopoet.plugins.encodec_audio.model import EncodecTokenizer
    from videopoet.plugins.magvit.model import MagvitTokenizer, build_tokenizer

    for name in ("visual", "audio"):
        path = getattr(args, name)
        if path != "none" and not Path(path, "model.safetensors").is_file():
            raise SystemExit(f"error: --{name}={path!r}: expected a tokenizer folder or 'none'")
    began = time.perf_counter()
    samples = [sample(EVAL_OFFSET + i, *fmt) for i in range(args.clips)]
    trained: dict = {}
    baseline: dict = {}
    torch.manual_seed(0)
    if args.visual != "none":
        visual = MagvitTokenizer.from_pretrained(args.visual)
        untrained_visual = build_tokenizer(**visual.config_dict()).eval()
        trained |= visual_figures(visual, samples, fmt)
        baseline |= visual_figures(untrained_visual, samples, fmt)
    if args.audio != "none":
        audio = EncodecTokenizer.from_pretrained(args.audio)
        untrained_audio = EncodecTokenizer(audio.config)
        # an untrained EnCodec has empty codebooks until k-means runs on a first batch
        untrained_audio.train()
        untrained_audio(torch.stack([s.audio for s in samples[:8]]))
        untrained_audio.eval()
        trained |= audio_figures(audio, samples)
        baseline |= audio_figures(untrained_audio, samples)
    print(
        f"{args.clips} held-out world clips at {args.format}, {time.perf_counter() - began:.0f} s"
    )
    print(f"{'figure':32s} {'trained':>10s} {'untrained':>10s}")
    for key, value in trained.items():
        if isinstance(value, list):
            shown = " ".join(f"{v:.3f}" for v in value)
            other = " ".join(f"{v:.3f}" for v in baseline[key])
            print(f"{key:32s} {shown:>10s} {other:>10s}")
        else:
            print(f"{key:32s} {value:10.3f} {baseline[key]:10.3f}")
    figures = {
        "format": args.format,
        "clips": args.clips,
        **trained,
        "untrained": baseline,
        "visual_checkpoint": str(args.visual),
        "audio_checkpoint": str(args.audio),
    }
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
