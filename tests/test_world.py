"""The built-in synthetic world: deterministic, well-formed, and its ground truth is true."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from videopoet.core.errors import ConfigError
from videopoet.data import captions, world
from videopoet.data.captions import parse_caption

# (frames, height, width)
FORMATS = [(1, 64, 64), (17, 64, 64), (17, 128, 128), (41, 128, 128), (17, 224, 128)]


def only(motion: str) -> world.WorldConfig:
    return world.WorldConfig(motions=(motion,))


def coverage_centroid(masks: torch.Tensor) -> np.ndarray:
    m = masks.numpy().astype(np.float64)
    _, height, width = m.shape
    area = m.sum((1, 2))
    cx = (m.sum(1) * (np.arange(width) + 0.5)).sum(1) / area
    cy = (m.sum(2) * (np.arange(height) + 0.5)).sum(1) / area
    return np.stack([cx, cy], 1)


def test_same_seed_same_sample_bit_for_bit():
    a, b = world.sample(7, 17, 64, 64), world.sample(7, 17, 64, 64)
    assert torch.equal(a.video, b.video) and torch.equal(a.audio, b.audio)
    assert a.caption == b.caption and torch.equal(a.masks, b.masks)
    assert torch.equal(a.flow, b.flow) and torch.equal(a.depth, b.depth)


def test_different_seeds_and_indices_differ():
    base = world.sample(7)
    other_seed = world.sample(7, config=world.WorldConfig(seed=1))
    other_index = world.sample(8)
    for other in (other_seed, other_index):
        assert not torch.equal(base.video, other.video)
        assert not torch.equal(base.audio, other.audio)
    captions_ = {world.sample(i, 17, 16, 16).caption for i in range(20)}
    assert len(captions_) >= 15


def test_held_out_split():
    held = world.sample(world.EVAL_OFFSET + 3, 17, 32, 32)
    assert torch.equal(held.video, world.sample(world.EVAL_OFFSET + 3, 17, 32, 32).video)
    assert not torch.equal(held.video, world.sample(3, 17, 32, 32).video)
    world.sample(2**40 + 5, 1, 16, 16)  # indices past 32 bits are fine
    with pytest.raises(ConfigError, match="index"):
        world.sample(-1)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: "x".join(map(str, f)))
def test_shapes_and_ranges(fmt):
    frames, height, width = fmt
    s = world.sample(4, *fmt)
    assert s.video.shape == (3, frames, height, width) and s.video.dtype == torch.float32
    assert s.video.min() >= -1 and s.video.max() <= 1
    # audio: exactly frames / 8 seconds at 16 kHz
    assert s.audio.shape == (1, frames * world.SAMPLE_RATE // world.FPS)
    assert s.audio.shape[-1] / world.SAMPLE_RATE == frames / world.FPS
    assert s.audio.dtype == torch.float32 and s.audio.abs().max() <= 1
    assert s.masks.shape == s.depth.shape == (frames, height, width)
    assert s.flow.shape == (frames - 1, 2, height, width)
    assert s.centers.shape == (frames, 2) and s.sizes.shape == (frames,)
    assert s.pitch_hz.shape == s.loudness.shape == (frames,)
    assert 0 <= s.masks.min() and s.masks.max() <= 1
    assert 0 <= s.depth.min() and s.depth.max() <= 1
    assert world.LOW_HZ <= s.pitch_hz.min() and s.pitch_hz.max() <= world.HIGH_HZ
    structure = world.structure_clip(s)
    assert structure.shape == s.video.shape and structure.abs().max() <= 1
    assert s.frames == frames


def test_images_name_no_motion():
    for index in range(40):
        s = world.sample(index, 1, 32, 32)
        parsed = parse_caption(s.caption)
        assert parsed["motion"] is None, s.caption
        assert (parsed["color"], parsed["shape"]) == (s.color, s.shape)
        assert not any(p in s.caption for p in sum(captions.MOTION_PHRASES.values(), ()))


def test_same_scene_at_every_resolution():
    small, large = world.sample(11, 17, 64, 64), world.sample(11, 17, 128, 128)
    assert small.caption == large.caption and small.motion == large.motion
    np.testing.assert_allclose(large.centers.numpy(), 2 * small.centers.numpy(), atol=1e-3)
    np.testing.assert_allclose(large.sizes.numpy(), 2 * small.sizes.numpy(), rtol=1e-5)


@pytest.mark.parametrize("motion", world.MOTIONS)
def test_main_object_stays_wholly_in_frame(motion):
    for fmt in [(17, 64, 64), (41, 128, 128), (17, 224, 128), (5, 32, 32)]:
        frames, height, width = fmt
        for index in range(6):
            s = world.sample(index, *fmt, config=only(motion))
            assert s.motion == motion
            for (cx, cy), size in zip(s.centers.tolist(), s.sizes.tolist(), strict=True):
                half_w, half_h = world._half_extent(s.shape, size)
                assert 0 < cx - half_w and cx + half_w < width
                assert 0 < cy - half_h and cy + half_h < height
            # all of its area is drawn: nothing is cut off at a border
            area = s.masks.sum((1, 2)).numpy()
            np.testing.assert_allclose(area, s.sizes.numpy() ** 2, rtol=0.02)


@pytest.mark.parametrize("motion", world.MOTIONS)
def test_motion_ground_truth(motion):
    s = world.sample(2, 17, 64, 64, config=only(motion))
    dx, dy = (s.centers[-1] - s.centers[0]).tolist()
    growth = float(s.sizes[-1] / s.sizes[0])
    unit = 64
    expected = {
        "left": dx < -0.3 * unit,
        "right": dx > 0.3 * unit,
        "up": dy < -0.3 * unit,
        "down": dy > 0.3 * unit,
        "growing": growth > 1.5,
        "shrinking": growth < 0.65,
        "still": abs(dx) + abs(dy) == 0 and growth == 1,
        "bouncing": float(s.centers[:, 1].max() - s.centers[:, 1].min()) > 0.2 * unit,
    }
    assert expected[motion]
    if motion == "bouncing":
        assert s.bounce_times and all(
            b - a == pytest.approx(world.BOUNCE_PERIOD / world.FPS)
            for a, b in zip(s.bounce_times, s.bounce_times[1:], strict=False)
        )
        # a floor contact is the lowest point (largest y) of the path
        lowest = int(np.argmax(s.centers[:, 1].numpy()))
        assert min(abs(lowest / world.FPS - b) for b in s.bounce_times) < 1 / world.FPS
    else:
        assert s.bounce_times == []


@pytest.mark.parametrize("fmt", [(17, 64, 64), (17, 224, 128)])
def test_centres_are_the_mask_centroids(fmt):
    for index in range(12):
        s = world.sample(index, *fmt)
        np.testing.assert_allclose(coverage_centroid(s.masks), s.centers.numpy(), atol=0.05)
        np.testing.assert_allclose(s.masks.sum((1, 2)).numpy(), s.sizes.numpy() ** 2, rtol=0.02)


@pytest.mark.parametrize("motion", ["left", "down", "bouncing", "growing", "shrinking"])
def test_flow_moves_the_mask(motion):
    s = world.sample(5, 17, 64, 64, config=only(motion))
    centroid = coverage_centroid(s.masks)
    for t in range(s.frames - 1):
        inside = s.masks[t] > 0.5
        mean_flow = s.flow[t][:, inside].mean(1).numpy()
        np.testing.assert_allclose(centroid[t] + mean_flow, centroid[t + 1], atol=0.1)
        assert (s.flow[t][:, ~inside] == 0).all()  # the background and distractors are still


def test_still_objects_have_no_flow():
    s = world.sample(0, 17, 32, 32, config=only("still"))
    assert (s.flow == 0).all()


def test_depth_order():
    for index in range(20):
        s = world.sample(index, 9, 64, 64)
        for t in range(s.frames):
            inside = s.masks[t] > 0.5
            assert s.depth[t][inside].max() < s.depth[t][~inside].min()  # nearest
        assert s.depth[:, 0, 0].eq(1).all()  # the background is farthest
    grow = world.sample(1, 17, 64, 64, config=only("growing"))
    near = [float(grow.depth[t][grow.masks[t] > 0.5].mean()) for t in range(grow.frames)]
    assert all(b < a for a, b in zip(near, near[1:], strict=False))
    shrink = world.sample(1, 17, 64, 64, config=only("shrinking"))
    far = [float(shrink.depth[t][shrink.masks[t] > 0.5].mean()) for t in range(shrink.frames)]
    assert all(b > a for a, b in zip(far, far[1:], strict=False))


def test_distractors_are_small_other_colours_behind():
    seen = 0
    for index in range(30):
        s = world.sample(index, 1, 64, 64)
        for d in s.distractors:
            seen += 1
            assert d["color"] != s.color and d["size"] < s.sizes.min()
    assert seen > 10


def test_sound_follows_height_and_size():
    s = world.sample(0, 17, 64, 64, config=only("up"))
    assert (s.pitch_hz[1:] > s.pitch_hz[:-1]).all()  # rising object, rising pitch
    expected = world.LOW_HZ * (world.HIGH_HZ / world.LOW_HZ) ** (1 - s.centers[:, 1] / 64)
    torch.testing.assert_close(s.pitch_hz, expected.float(), rtol=1e-4, atol=1e-3)
    g = world.sample(0, 17, 64, 64, config=only("growing"))
    assert (g.loudness[1:] >= g.loudness[:-1]).all() and g.loudness[-1] > g.loudness[0]


def test_every_caption_parses_back():
    for index in range(500):
        s = world.sample(index, 17, 16, 16)  # the caption does not depend on the resolution
        parsed = parse_caption(s.caption)
        assert parsed == {"color": s.color, "shape": s.shape, "motion": s.motion}, s.caption


def sentence_frame(text: str) -> str:
    """A caption with its colour, shape and background words replaced by placeholders."""
    for name in sorted(world.BACKGROUNDS, key=len, reverse=True):
        text = text.replace(name, "<background>")
    for name in world.COLORS:
        text = re.sub(rf"\b(an?) {name}\b", "<a> <colour>", text)
    for word in sum(captions.SHAPE_WORDS.values(), ()):
        text = re.sub(rf"\b{word}\b", "<shape>", text)
    return text


def test_captions_are_paraphrased():
    frames = {sentence_frame(world.sample(i, 17, 16, 16).caption) for i in range(300)}
    assert len(frames) > 100  # many sentence frames, not one template
    same_scene = world.WorldConfig(
        colors=("red",), shapes=("circle",), motions=("left",), backgrounds=("black",)
    )
    texts = {world.sample(i, 17, 16, 16, same_scene).caption for i in range(100)}
    assert len(texts) >= 20  # one scene, said many ways


def test_config_is_validated():
    with pytest.raises(ValidationError, match="magenta"):
        world.WorldConfig(colors=("red", "magenta"))
    with pytest.raises(ValidationError):
        world.WorldConfig(motions=())
    with pytest.raises(ConfigError, match="format"):
        world.sample(0, 0, 64, 64)


def test_batches():
    batch = world.make_batch([0, 1, 2], 5, 32, 32)
    assert batch.shape == (3, 3, 5, 32, 32)
    assert torch.equal(batch[1], world.sample(1, 5, 32, 32).video)
    sound = world.audio_batch([0, 1], 1.0)
    assert sound.shape == (2, 1, world.SAMPLE_RATE)


def _burst_ratio(signal: np.ndarray, start: int, rate: int, window: int) -> float:
    """Mean energy of ``signal[start : start + window]`` over that of the 0.1 s on each side
    (less 5 ms before and the 20 ms after ``start``, where a 12 ms click would still ring)."""
    lo, hi = max(0, start - rate // 10), min(len(signal), start + rate // 10)
    around = np.concatenate(
        [signal[lo : max(lo, start - rate // 200)], signal[start + rate // 50 : hi]]
    )
    return float(np.mean(signal[start : start + window] ** 2) / np.mean(around**2))


def test_a_click_is_heard_at_every_bounce():
    """The sound track, not only ``bounce_times``: at every floor contact a burst of energy
    starts, above the tone around it, and nowhere else. The click is broadband noise and the
    tone is smooth, so the burst is measured on the first difference (a high-pass); raw energy
    also rises, but less: a loud tone can mask much of a click's first 2 ms."""
    rate = world.SAMPLE_RATE
    window = rate // 500  # 2 ms
    at_bounces, between, raw, offsets = [], [], [], []
    for index in range(20):
        s = world.sample(index, 41, 16, 16, config=only("bouncing"))
        wave = s.audio[0].numpy().astype(np.float64)
        high = np.diff(wave, prepend=wave[0])
        assert len(s.bounce_times) >= 4
        for bounce in s.bounce_times:
            start = round(bounce * rate)
            at_bounces.append(_burst_ratio(high, start, rate, window))
            raw.append(_burst_ratio(wave, start, rate, window))
            # the loudest 2 ms of the 0.2 s around the contact start at the contact
            lo, hi = max(0, start - rate // 10), min(len(high), start + rate // 10)
            energy = np.convolve(high[lo:hi] ** 2, np.ones(window), "valid")
            offsets.append((lo + int(np.argmax(energy)) - start) / rate)
            middle = round((bounce + world.BOUNCE_PERIOD / world.FPS / 2) * rate)
            if middle + rate // 10 < len(high):  # half-way between contacts: no click
                between.append(_burst_ratio(high, middle, rate, window))
    print(
        f"{len(at_bounces)} bounces: high-passed energy of the 2 ms at a contact over its "
        f"surroundings min {min(at_bounces):.1f} median {np.median(at_bounces):.1f}; half-way "
        f"between contacts max {max(between):.2f}; raw energy min {min(raw):.2f} median "
        f"{np.median(raw):.2f}; loudest window off by at most {max(map(abs, offsets)) * 1e3:.2f} ms"
    )
    assert min(at_bounces) > 5 and max(between) < 2
    assert max(map(abs, offsets)) <= 0.001
    assert min(raw) > 1 and np.median(raw) > 2
