"""The analyser reads the world's clips and sounds back, and tolerates noise, blur and emptiness."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from videopoet.data import analyser, world

SEEDS = range(200)


@pytest.fixture(scope="module")
def samples(one_thread):
    return [world.sample(i, 17, 64, 64) for i in SEEDS]


@pytest.fixture(scope="module")
def analyses(samples):
    return [analyser.analyse_video(s.video) for s in samples]


def degrade(video: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A 3 x 3 box blur, then Gaussian noise of std 0.1 (in [-1, 1] units)."""
    frames = video.permute(1, 0, 2, 3)
    blurred = F.avg_pool2d(F.pad(frames, (1, 1, 1, 1), mode="replicate"), 3, 1)
    noisy = blurred + 0.1 * torch.randn(blurred.shape, generator=generator)
    return noisy.permute(1, 0, 2, 3).clamp(-1, 1)


def accuracy(pairs) -> float:
    pairs = list(pairs)
    return sum(a == b for a, b in pairs) / len(pairs)


def centre_error(analysis, sample) -> np.ndarray:
    return np.linalg.norm(analysis.centers - sample.centers.numpy(), axis=1)


def test_reads_the_worlds_clips(samples, analyses):
    colour = accuracy((a.color, s.color) for a, s in zip(analyses, samples, strict=True))
    shape = accuracy((a.shape, s.shape) for a, s in zip(analyses, samples, strict=True))
    motion = accuracy((a.motion, s.motion) for a, s in zip(analyses, samples, strict=True))
    ground = accuracy((a.background, s.background) for a, s in zip(analyses, samples, strict=True))
    errors = np.concatenate([centre_error(a, s) for a, s in zip(analyses, samples, strict=True)])
    sizes = np.concatenate(
        [np.abs(a.sizes - s.sizes.numpy()) for a, s in zip(analyses, samples, strict=True)]
    )
    print(
        f"clean 17x64x64, {len(samples)} seeds: colour {colour:.3f} shape {shape:.3f} "
        f"motion {motion:.3f} background {ground:.3f} centre error mean {errors.mean():.3f} "
        f"max {errors.max():.3f} px, size error mean {sizes.mean():.3f} max {sizes.max():.3f} px"
    )
    assert colour == 1.0 and motion == 1.0 and ground == 1.0
    assert shape >= 0.97
    assert errors.mean() < 0.25 and errors.max() < 1.0
    assert sizes.mean() < 0.25 and sizes.max() < 1.0


def test_per_frame_measures(samples, analyses):
    for a, s in zip(analyses[:50], samples[:50], strict=True):
        assert a.present.all() and a.found
        assert a.colors == [s.color] * s.frames
        assert (a.confidence > 0.9).all()
        assert a.centers.shape == (s.frames, 2) and a.sizes.shape == (s.frames,)
    shapes = [(p, s.shape) for a, s in zip(analyses, samples, strict=True) for p in a.shapes]
    assert accuracy(shapes) >= 0.97


def test_noise_and_blur(samples):
    generator = torch.Generator().manual_seed(0)
    subset = samples[:100]
    analyses = [analyser.analyse_video(degrade(s.video, generator)) for s in subset]
    colour = accuracy((a.color, s.color) for a, s in zip(analyses, subset, strict=True))
    shape = accuracy((a.shape, s.shape) for a, s in zip(analyses, subset, strict=True))
    motion = accuracy((a.motion, s.motion) for a, s in zip(analyses, subset, strict=True))
    errors = np.concatenate([centre_error(a, s) for a, s in zip(analyses, subset, strict=True)])
    print(
        f"blur + noise 0.1, {len(subset)} seeds: colour {colour:.3f} shape {shape:.3f} "
        f"motion {motion:.3f} centre error mean {errors.mean():.3f} max {errors.max():.3f} px"
    )
    assert colour >= 0.95 and motion >= 0.95 and shape >= 0.9
    assert np.nanmean(errors) < 1.5


@pytest.mark.parametrize(
    "fmt", [(17, 128, 128), (17, 128, 224), (17, 224, 128), (41, 128, 128), (1, 64, 64)]
)
def test_other_formats(fmt, one_thread):
    for index in range(6):
        s = world.sample(index, *fmt)
        a = analyser.analyse_video(s.video)
        assert (a.color, a.shape, a.background) == (s.color, s.shape, s.background)
        assert a.motion == (s.motion if fmt[0] > 1 else None)
        assert centre_error(a, s).max() < 1.0


def test_an_image_may_be_three_dimensional():
    s = world.sample(3, 1, 64, 64)
    a = analyser.analyse_video(s.video[:, 0])
    assert a.frames == 1 and a.color == s.color and a.motion is None


def test_no_object_gives_nan_and_none():
    flat = torch.full((3, 17, 64, 64), -0.8)
    a = analyser.analyse_video(flat)
    assert not a.found and a.color is None and a.shape is None and a.motion is None
    assert np.isnan(a.centers).all() and np.isnan(a.sizes).all()
    assert a.background == "black"
    score = analyser.score_clip(flat, "a red ball moves left on a black background")
    assert score["found"] is False and score["color_match"] is False and score["score"] == 0.0
    assert math.isnan(analyser.pitch_height_correlation(flat, torch.zeros(1, 34000)))
    noise = torch.rand(3, 5, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    analyser.analyse_video(noise)  # anything, but no exception


def test_motion_classes_from_trajectories():
    t = np.arange(17.0)
    still = np.tile([[32.0, 32.0]], (17, 1))
    sizes = np.full(17, 14.0)
    assert analyser.classify_motion(still, sizes, 64)[0] == "still"
    left = still - np.stack([t * 1.8, 0 * t], 1)
    assert analyser.classify_motion(left, sizes, 64)[0] == "left"
    up = still - np.stack([0 * t, t * 1.8], 1)
    assert analyser.classify_motion(up, sizes, 64)[0] == "up"
    bounce = still - np.stack([0 * t, 20 * np.abs(np.sin(np.pi * t / 8))], 1)
    assert analyser.classify_motion(bounce, sizes, 64)[0] == "bouncing"
    assert analyser.classify_motion(still, sizes * 1.6 ** (t / 16), 64)[0] == "growing"
    assert analyser.classify_motion(still, sizes * 0.6 ** (t / 16), 64)[0] == "shrinking"
    absent = np.full(17, False)
    assert analyser.classify_motion(still, sizes, 64, absent) == (None, {})


def test_score_clip(samples, analyses):
    s, a = samples[5], analyses[5]
    score = analyser.score_clip(a, s.caption)
    assert score["score"] == 1.0 and score["color_match"] and score["motion_match"]
    other = next(c for c in world.COLORS if c != s.color)
    wrong = analyser.score_clip(s.video, f"a {other} triangle moves left")
    assert wrong["color_match"] is False and wrong["score"] < 1.0
    image = analyser.score_clip(s.video[:, :1], f"a {s.color} {s.shape}")
    assert image["motion_match"] is None and image["score"] == 1.0


def test_pitch_follows_the_worlds_sound(samples):
    errors = []
    for s in samples:
        heard = analyser.analyse_audio(s.audio)
        assert len(heard.times) == s.audio.shape[-1] // analyser.HOP + 1
        errors.append(np.abs(heard.pitch_at_frames(s.frames) / s.pitch_hz.numpy() - 1))
    errors = np.concatenate(errors)
    unvoiced = np.isnan(errors).mean()
    print(
        f"pitch, {len(samples)} seeds: median relative error {np.nanmedian(errors):.4f}, "
        f"90th percentile {np.nanpercentile(errors, 90):.4f}, unvoiced {unvoiced:.3f}"
    )
    assert np.nanmedian(errors) < 0.03 and unvoiced < 0.05


def test_pitch_edge_cases():
    tone = 0.5 * torch.sin(2 * math.pi * 440 * torch.arange(16000) / 16000)
    assert abs(np.nanmedian(analyser.analyse_audio(tone).pitch_hz) / 440 - 1) < 0.01
    # a 48 kHz stereo input is downmixed and resampled
    tone48 = 0.5 * torch.sin(2 * math.pi * 300 * torch.arange(48000) / 48000).repeat(2, 1)
    assert abs(np.nanmedian(analyser.analyse_audio(tone48, 48000).pitch_hz) / 300 - 1) < 0.01
    silent = analyser.analyse_audio(torch.zeros(1, 16000))
    assert np.isnan(silent.pitch_hz).all() and (silent.loudness == 0).all()
    noise = analyser.analyse_audio(0.3 * torch.randn(1, 16000, generator=torch.Generator()))
    assert np.isfinite(noise.pitch_hz).mean() < 0.1
    assert np.isnan(silent.pitch_at_frames(8)).all()


def test_correlations(samples, analyses):
    moving = [i for i, s in enumerate(samples) if s.motion in ("bouncing", "up", "down")][:10]
    for i in moving:
        r = analyser.pitch_height_correlation(analyses[i], samples[i].audio)
        assert r > 0.95
    a, b = samples[moving[0]], samples[moving[1]]
    assert analyser.pitch_correlation(a.audio, a.audio) == pytest.approx(1.0)
    assert analyser.pitch_correlation(a.audio, b.audio) < 0.9
    # a still object holds its height: the correlation is undefined, not an error
    still = next(i for i, s in enumerate(samples) if s.motion == "still")
    assert math.isnan(analyser.pitch_height_correlation(analyses[still], samples[still].audio))


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    ranks = [np.argsort(np.argsort(x)).astype(np.float64) for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def _rms_per_amplitude(shape: str) -> float:
    """RMS of the world's waveform for a shape at amplitude 1 (its timbres, see world._sound)."""
    phase = np.linspace(0, 2 * np.pi, 20_000, endpoint=False)
    if shape == "circle":
        return 1 / math.sqrt(2)
    power = 1 if shape == "square" else 2
    wave = sum(np.sin(n * phase) / n**power for n in (1, 3, 5, 7))
    return float(np.sqrt(np.mean(wave**2)) / np.abs(wave).max())


def test_loudness_follows_the_worlds_size(one_thread):
    """The analyser's loudness (RMS per 20 ms frame) against the world's ground truth: it
    rises with a growing object and falls with a shrinking one (rank correlation with the
    size), and it is the ground-truth amplitude times the shape's waveform RMS."""
    correlations, errors = [], []
    for motion in ("growing", "shrinking", "still", "left"):
        config = world.WorldConfig(motions=(motion,))
        for index in range(world.EVAL_OFFSET, world.EVAL_OFFSET + 8):
            s = world.sample(index, 17, 32, 32, config)
            heard = analyser.analyse_audio(s.audio)
            # frames whose window lies wholly inside the clip (the ends are zero-padded)
            half = analyser.WINDOW / 2 / s.sample_rate
            inner = (heard.times >= half) & (
                heard.times + half <= s.audio.shape[-1] / s.sample_rate
            )
            at = heard.times[inner] * s.fps  # in clip frames
            size = np.interp(at, np.arange(s.frames), s.sizes.numpy())
            amplitude = np.interp(at, np.arange(s.frames), s.loudness.numpy())
            loud = heard.loudness[inner]
            errors.append(np.abs(loud / (amplitude * _rms_per_amplitude(s.shape)) - 1))
            if motion in ("growing", "shrinking"):
                correlations.append(_rank_correlation(loud, size))
                change = loud[-1] / loud[0]
                assert change > 1.3 if motion == "growing" else change < 0.8, (index, change)
    errors = np.concatenate(errors)
    print(
        f"loudness, growing/shrinking: rank correlation with size min {min(correlations):.4f}; "
        f"RMS vs amplitude x shape RMS, {len(errors)} frames: relative error mean "
        f"{errors.mean():.4f} max {errors.max():.4f}"
    )
    assert min(correlations) > 0.99
    assert errors.max() < 0.03
