"""Task behaviour on an untrained tiny bundle: every registered task (ours and the example
plugin's) builds a training example and generates media as its declaration says, through the
contract of ``videopoet.testing``; then what single tasks add (optional inputs, masks,
directions, condition frames), the progressive preview and ``Engine.extend``.
"""

from __future__ import annotations

import random

import pytest
import torch

from videopoet.core.engine import Engine
from videopoet.core.plugins import get_registry
from videopoet.tasks.base import Context, InputError
from videopoet.tasks.outpaint import DIRECTIONS
from videopoet.testing import (
    check_example,
    check_generate,
    sample_inputs,
    tiny_engine,
    world_source,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TASKS = sorted(get_registry().tasks)


@pytest.fixture(scope="session")
def engine(tmp_path_factory):
    """The untrained tiny bundle, written with ``save_pretrained`` and read back."""
    created = tiny_engine()
    folder = created.save_pretrained(tmp_path_factory.mktemp("bundle") / "tiny")
    loaded = Engine.from_pretrained(folder)
    assert loaded.tasks() == created.tasks() and loaded.formats == created.formats
    mine, theirs = created.lm.state_dict(), loaded.lm.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    return loaded


@pytest.fixture(scope="module")
def video_format(engine):
    return engine.pick_format(engine.registry.task("t2v"))


@pytest.fixture(scope="module")
def source(engine, video_format):
    return world_source(engine, video_format)


def test_every_task_is_served_including_the_plugin(engine):
    assert engine.tasks() == list(engine.registry.tasks)
    assert "reverse" in engine.tasks(), "pip install -e examples/videopoet-example-plugin"


@pytest.mark.parametrize("name", TASKS)
def test_training_example_has_the_declared_layout(engine, name):
    encoded = check_example(name, engine)
    assert encoded.task == name


@pytest.mark.parametrize("name", TASKS)
def test_generate_gives_media_of_the_format(engine, name):
    result = check_generate(name, engine)
    fmt = result.format
    if result.video is not None:
        assert result.video.shape[-2:] == (fmt.height, fmt.width)


# ---------------------------------------------------------------------------- the checks


def test_check_example_catches_a_draw_that_changes_nothing(engine, monkeypatch):
    from videopoet.tasks.inpaint import Inpaint
    from videopoet.tasks.masks import box_mask

    def same_box(self, fmt, frames, rng):
        rng.random()  # drawn, then ignored: every seed gives the same mask
        return box_mask(frames, fmt.height, fmt.width, (8, 8, 16, 16))

    monkeypatch.setattr(Inpaint, "draw_mask", same_box)
    monkeypatch.setattr(Inpaint, "optional_drop", 0.0)  # the caption always kept
    with pytest.raises(AssertionError, match="all give the same example"):
        check_example("inpaint", engine)


def test_check_generate_catches_wrong_media(engine, monkeypatch):
    behaviour = type(engine.task("uncond_image"))

    def cropped(self, output, conditions):
        output.video = output.video[..., :-1]
        return output

    monkeypatch.setattr(behaviour, "to_media", cropped)
    with pytest.raises(AssertionError, match="the visual target is"):
        check_generate("uncond_image", engine)


# ---------------------------------------------------------------------------- single tasks


def _content_spans(layout):
    return [(s.name, s.length) for s in layout.spans if s.kind != "special"]


def test_stylize_with_and_without_its_first_frame(engine, source, video_format):
    behaviour = engine.task("stylize")
    examples = [behaviour.build_example(source, video_format, random.Random(s)) for s in range(8)]
    with_frame = next(e for e in examples if "first_frame" in e.conditions.visual)
    without = next(e for e in examples if "first_frame" not in e.conditions.visual)
    layouts = [engine.encode_example(e).layout for e in (with_frame, without)]
    names = [[n for n, _ in _content_spans(layout)] for layout in layouts]
    assert names == [
        ["text", "structure_in", "first_frame_in", "visual_out"],
        ["text", "structure_in", "visual_out"],
    ]
    assert layouts[0].span("first_frame_in").length == layouts[0].span("visual_out").length // 5
    extra = layouts[0].span("first_frame_in").length + 2  # the ids and their two markers
    assert layouts[0].total_length == layouts[1].total_length + extra

    inputs = sample_inputs(behaviour, source, video_format, optional=False)
    assert set(inputs) == {"text", "video"}
    result = engine.generate("stylize", seed=0, **inputs)
    assert not result.layout.has("first_frame_in")
    assert result.video.shape == (1, 3, 17, 64, 64)


def test_inpaint_masks_vary_and_hide_what_they_cover(engine, source, video_format):
    behaviour = engine.task("inpaint")
    fmt = video_format
    masks = [behaviour.draw_mask(fmt, fmt.frames, random.Random(s)) for s in range(6)]
    assert len({m.numpy().tobytes() for m in masks}) == 6
    assert len({int(m[0].sum()) for m in masks}) > 1  # sizes vary, not just places
    assert all(m.any() and not m.all() and torch.equal(m, m[:1].expand_as(m)) for m in masks)

    clip = source.video
    everything = torch.ones(fmt.frames, fmt.height, fmt.width, dtype=torch.bool)
    context = Context(fmt)
    hidden = behaviour.prepare({"video": clip, "mask": everything}, context)
    assert torch.equal(hidden.masks["visual"], everything)
    plain = engine.encode_video(clip)
    covered = engine.encode_video(hidden.visual["visual"], hidden.masks["visual"])
    assert not torch.equal(plain, covered)
    other = world_source(engine, fmt, index=7).video
    assert (other - clip).abs().mean() > 0.05
    assert torch.equal(engine.encode_video(other, everything), covered)  # nothing leaks

    # a training example's mask: the hidden pixels change no id of the condition
    example = behaviour.build_example(source, fmt, random.Random(0))
    condition, mask = example.conditions.visual["visual"], example.conditions.masks["visual"]
    noisy = condition.clone()
    noisy[:, mask] = torch.rand(3, int(mask.sum())) * 2 - 1
    assert not torch.equal(noisy, condition)
    assert torch.equal(engine.encode_video(noisy, mask), engine.encode_video(condition, mask))


def test_inpaint_takes_a_box_string(engine, source, video_format):
    behaviour = engine.task("inpaint")
    got = behaviour.prepare({"video": source.video, "mask": "4,8,16,32"}, Context(video_format))
    mask = got.masks["visual"]
    assert int(mask[0].sum()) == 16 * 32 and mask[:, 4:20, 8:40].all()
    with pytest.raises(InputError, match="inside the 64x64 frame"):
        behaviour.prepare({"video": source.video, "mask": "60,0,16,16"}, Context(video_format))


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_outpaint_hides_the_named_border(engine, source, video_format, direction):
    behaviour = engine.task("outpaint")
    inputs = {"video": source.video, "direction": direction, "amount": 0.25}
    got = behaviour.prepare(inputs, Context(video_format))
    mask = got.masks["visual"][0]
    rows, cols = mask.any(1), mask.any(0)
    side = {
        "left": cols[:16].all() and not cols[16:].any() and rows.all(),
        "right": cols[-16:].all() and not cols[:-16].any() and rows.all(),
        "top": rows[:16].all() and not rows[16:].any() and cols.all(),
        "bottom": rows[-16:].all() and not rows[:-16].any() and cols.all(),
        "horizontal": cols[:8].all() and cols[-8:].all() and not cols[8:-8].any(),
        "vertical": rows[:8].all() and rows[-8:].all() and not rows[8:-8].any(),
    }
    assert side[direction], f"{direction}: mask rows {rows.nonzero().flatten().tolist()}"
    assert float(mask.float().mean()) == pytest.approx(0.25)
    layout = engine.layout(engine.registry.task("outpaint"), video_format, got.present())
    content, _, _ = engine.encode_conditions(layout, got)
    assert content["visual_in"].shape == (1, layout.span("visual_in").length)
    assert not torch.equal(content["visual_in"], engine.encode_video(source.video))


def test_outpaint_generates_with_a_direction(engine, source):
    result = engine.generate("outpaint", video=source.video, direction="top", amount=0.4, seed=1)
    assert result.video.shape == (1, 3, 17, 64, 64)
    with pytest.raises(InputError, match="direction='up'"):
        engine.generate("outpaint", video=source.video, direction="up")


@pytest.mark.parametrize(
    ("task", "inputs"),
    [("inpaint", {"mask": "8,16,24,20"}), ("outpaint", {"direction": "left", "amount": 0.25})],
)
def test_masked_tasks_hand_back_the_visible_pixels_as_given(engine, source, task, inputs):
    result = engine.generate(task, video=source.video, seed=2, num_samples=2, **inputs)
    hidden = (
        engine.task(task)
        .prepare(
            {"video": source.video, **inputs},
            Context(engine.pick_format(engine.registry.task(task))),
        )
        .masks["visual"]
    )
    given = source.video.expand(2, -1, -1, -1, -1)
    assert torch.equal(result.video[..., ~hidden], given[..., ~hidden])
    # inside the hidden region the untrained LM's clip, not the input
    assert not torch.allclose(result.video[..., hidden], given[..., hidden], atol=0.1)
    span = result.layout.span("visual_out")
    raw = engine.decode_video(result.layout.split(result.tokens)["visual_out"], span.shape)
    torch.testing.assert_close(raw[..., hidden], result.video[..., hidden])


def test_fp_condition_frames_set_the_condition_length(engine, source):
    lengths = {}
    for frames in (1, 9):
        clip = source.video[:, :frames]  # only the condition frames are needed
        result = engine.generate("fp", video=clip, condition_frames=frames, seed=0)
        assert result.video.shape == (1, 3, 17, 64, 64)
        lengths[frames] = result.layout.span("visual_in").length
    per_frame = lengths[1]  # one latent frame: the first frame alone (causal tokenizer)
    assert lengths == {1: per_frame, 9: 3 * per_frame}
    for bad in (3, 17, "x"):
        with pytest.raises(InputError, match="condition_frames"):
            engine.generate("fp", video=source.video, condition_frames=bad)


def test_fp_training_draws_the_condition_frames(engine, source, video_format):
    behaviour = engine.task("fp")
    drawn = {
        behaviour.build_example(source, video_format, random.Random(s))
        .conditions.visual["visual"]
        .shape[1]
        for s in range(12)
    }
    assert drawn == {1, 5, 9, 13}


# ---------------------------------------------------------------------------- engine features


def test_preview_frames_are_the_final_first_frames(engine, source):
    calls = []
    result = engine.generate(
        "t2v", text=source.caption, seed=3, preview=lambda f, k: calls.append((f.clone(), k))
    )
    latent_frames = result.layout.span("visual_out").shape[0]
    assert [k for _, k in calls] == list(range(1, latent_frames + 1))
    for frames, k in calls:
        shown = 1 + 4 * (k - 1)
        assert frames.shape == (1, 3, shown, 64, 64)
        torch.testing.assert_close(frames, result.video[:, :, :shown], atol=1e-5, rtol=0)


def test_extend_continues_a_clip(engine, source):
    out = engine.extend(source.video, times=2, seed=0)
    assert out.shape == (3, 17 + 2 * 12, 64, 64)
    assert torch.equal(out[:, :17], source.video)
    assert out.abs().max() <= 1
