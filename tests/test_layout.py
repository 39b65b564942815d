import pytest
import torch

from videopoet.core.declarations import AudioTokenizerSpec, Format
from videopoet.core.errors import ConfigError, LayoutError, UnknownNameError
from videopoet.core.vocabulary import Vocabulary
from videopoet.sequences.layout import CONTENT, build_layout


def visual_tokens(vocab, frames, height, width):
    return vocab.visual.latent_shape(frames, height, width), vocab.visual.token_count(
        frames, height, width
    )


@pytest.mark.parametrize(
    "frames,height,width,shape,tokens",
    [
        (17, 128, 128, (5, 16, 16), 1280),
        (17, 224, 128, (5, 28, 16), 2240),
        (1, 128, 128, (1, 16, 16), 256),
        (41, 128, 128, (11, 16, 16), 2816),
        (17, 448, 256, (5, 56, 32), 8960),
        (17, 896, 512, (5, 112, 64), 35840),
    ],
)
def test_reference_visual_figures(vocab, frames, height, width, shape, tokens):
    assert visual_tokens(vocab, frames, height, width) == (shape, tokens)


def test_reference_audio_figure(vocab):
    assert vocab.audio.latent_frames(2.125) == 106
    assert vocab.audio.token_count(2.125) == 424


def test_reference_figures_through_layouts(registry, vocab):
    t2v = registry.task("t2v")
    assert build_layout(t2v, vocab).span("visual_out").length == 1280
    portrait = build_layout(t2v, vocab, Format(frames=17, height=224, width=128))
    assert portrait.span("visual_out").shape == (5, 28, 16)
    assert portrait.span("visual_out").length == 2240
    long = build_layout(t2v, vocab, Format(frames=41, height=128, width=128))
    assert long.span("visual_out").length == 2816
    assert build_layout(registry.task("t2i"), vocab).span("visual_out").length == 256
    assert build_layout(registry.task("v2a"), vocab).span("audio_out").length == 424


# Figure 3 / Table 1: the span sequence of every task of the paper at 17x128x128.
TEXT = ["bot_i", "text", "eot_i"]
VIN = ["bov_i", "visual_in", "eov_i"]
AIN = ["boa_i", "audio_in", "eoa_i"]
STRUCTURE = ["bov_i_structure", "structure_in", "eov_i_structure"]
FIRST_FRAME = ["bov_i_first_frame", "first_frame_in", "eov_i_first_frame"]
VOUT = ["bov_o", "visual_out", "eov_o"]
AOUT = ["boa_o", "audio_out", "eoa_o"]
EXPECTED = {
    "uncond": (["bos", "task"], VOUT + ["eos"], "<task_video>"),
    "uncond_image": (["bos", "task"], VOUT, "<task_image>"),
    "t2i": (["bos", "task", *TEXT], VOUT, "<task_image>"),
    "t2v": (["bos", "task", *TEXT], VOUT + ["eos"], "<task_video>"),
    "i2v": (["bos", "task", *TEXT, *VIN], VOUT + ["eos"], "<task_video>"),
    "fp": (["bos", "task", *VIN], VOUT + ["eos"], "<task_fp>"),
    "inpaint": (["bos", "task", *TEXT, *VIN], VOUT + ["eos"], "<task_inpaint>"),
    "outpaint": (["bos", "task", *TEXT, *VIN], VOUT + ["eos"], "<task_outpaint>"),
    "stylize": (
        ["bos", "task", *TEXT, *STRUCTURE, *FIRST_FRAME],
        VOUT + ["eos"],
        "<task_stylize>",
    ),
    "a2v": (["bos", "task", *AIN], VOUT + ["eos"], "<task_a2v>"),
    "v2a": (["bos", "task", *VIN], AOUT + ["eos"], "<task_v2a>"),
    "avcont": (["bos", "task", *VIN, *AIN], VOUT + AOUT + ["eos"], "<task_avcont>"),
}
LENGTHS = {
    "structure_in": 1280,
    "first_frame_in": 256,
    "text": 64,
    "visual_in": 1280,
    "visual_out": 1280,
    "audio_in": 424,
    "audio_out": 424,
}
CONDITION = {
    "i2v": {"visual_in": 256},
    "fp": {"visual_in": 512},
    "t2i": {"visual_out": 256},
    "uncond_image": {"visual_out": 256},
    "avcont": {"visual_in": 512, "audio_in": 124},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_paper_task_matches_figure_3(registry, vocab, name):
    prefix, target, token = EXPECTED[name]
    layout = build_layout(registry.task(name), vocab)
    assert layout.span_names == prefix + target
    assert [s.name for s in layout.spans if not s.target] == prefix
    assert layout.tokens[0] == vocab.id("<bos>")
    assert layout.tokens[1] == vocab.id(token)
    lengths = LENGTHS | CONDITION.get(name, {})
    for span in layout.spans:
        assert span.length == lengths.get(span.name, 1), span
    assert layout.prefix_length == sum(s.length for s in layout.spans if not s.target)
    assert sum(layout.loss_mask) == layout.target_length


def test_every_paper_task_is_registered(registry):
    assert set(EXPECTED) <= set(registry.tasks)


def test_format_tokens(registry, vocab):
    t2v = registry.task("t2v")
    assert "res" not in build_layout(t2v, vocab).span_names
    portrait = build_layout(t2v, vocab, Format(frames=17, height=224, width=128))
    assert portrait.span("res").token == vocab.id("<res_128x224>")
    assert portrait.span_names.index("res") == portrait.span_names.index("bov_o") - 1
    long = build_layout(t2v, vocab, Format(frames=41, height=224, width=128))
    assert [n for n in long.span_names if n in ("res", "len")] == ["res", "len"]


def test_optional_text_can_be_dropped(registry, vocab):
    layout = build_layout(registry.task("i2v"), vocab, text_tokens=0)
    assert "bot_i" not in layout.span_names and "text" not in layout.span_names
    layout = build_layout(registry.task("i2v"), vocab, text_tokens=7)
    assert layout.span("text").length == 7


def test_audio_at_24khz_layout():
    from videopoet.core.plugins import get_registry

    registry = get_registry()
    vocab = Vocabulary(
        registry.tasks.values(),
        registry.tokenizer_for("visual"),
        AudioTokenizerSpec(name="encodec24k", sample_rate=24_000, frame_rate=75.0),
    )
    assert build_layout(registry.task("v2a"), vocab).span("audio_out").length == 159 * 4


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(frames=15), "frames"),
        (dict(frames=16), "frames"),
        (dict(height=100), "height"),
        (dict(width=129), "width"),
    ],
)
def test_bad_geometry_names_the_field(registry, vocab, kwargs, field):
    fmt = Format(**({"frames": 17, "height": 128, "width": 128} | kwargs))
    with pytest.raises(ConfigError) as info:
        build_layout(registry.task("t2v"), vocab, fmt)
    assert info.value.field == field
    assert str(kwargs[field]) in str(info.value)


def test_more_than_64_text_tokens(registry, vocab):
    with pytest.raises(ConfigError, match="text_tokens=65: expected 0 to 64"):
        build_layout(registry.task("t2v"), vocab, text_tokens=65)


def test_required_text_cannot_be_dropped(registry, vocab):
    with pytest.raises(ConfigError, match="needs text"):
        build_layout(registry.task("t2v"), vocab, text_tokens=0)


def test_text_for_a_task_without_text(registry, vocab):
    with pytest.raises(ConfigError, match="takes no text"):
        build_layout(registry.task("uncond"), vocab, text_tokens=5)


def test_unsupported_format(registry, vocab):
    with pytest.raises(LayoutError, match="not supported by task t2v; supported: 17x128x128"):
        build_layout(registry.task("t2v"), vocab, Format(frames=21, height=128, width=128))
    with pytest.raises(ConfigError, match="generates an image"):
        build_layout(registry.task("t2i"), vocab, Format(frames=17, height=128, width=128))


def test_any_format_for_tiny_models(registry, tiny_vocab):
    layout = build_layout(
        registry.task("t2v"),
        tiny_vocab,
        Format(frames=5, height=16, width=16),
        text_tokens=4,
        strict_format=False,
    )
    assert layout.span("visual_out").shape == (2, 2, 2)


def test_unknown_task_suggests_close_names(registry):
    with pytest.raises(UnknownNameError, match="did you mean t2v"):
        registry.task("t2vv")


def test_fill_and_split_round_trip_and_offsets(registry, vocab):
    layout = build_layout(registry.task("v2a"), vocab)
    vin = torch.randint(0, 2**18, (2, 1280))
    aout = torch.randint(0, 1024, (2, 424))
    ids = layout.fill({"visual_in": vin, "audio_out": aout})
    start = layout.span("audio_out").start
    assert ids[0, start] == aout[0, 0] + 262_400  # level 0
    assert ids[0, start + 106] == aout[0, 106] + 263_424  # level 1 follows all of level 0
    assert ids[0, layout.span("visual_in").start] == vin[0, 0] + 256
    assert CONTENT not in ids.tolist()[0]
    back = layout.split(ids)
    assert torch.equal(back["visual_in"], vin) and torch.equal(back["audio_out"], aout)
    assert set(layout.split(ids[:, layout.prefix_length :])) == {"audio_out"}


def test_fill_rejects_bad_content(registry, vocab):
    layout = build_layout(registry.task("v2a"), vocab)
    with pytest.raises(LayoutError, match="missing"):
        layout.fill({"visual_in": torch.zeros(1, 1280, dtype=torch.long)})
    with pytest.raises(LayoutError, match=r"ids must lie in \[0, 1024\)"):
        layout.fill({"visual_in": torch.zeros(1, 1280), "audio_out": torch.full((1, 424), 1024)})
    with pytest.raises(LayoutError, match="takes"):
        layout.fill({"visual_in": torch.zeros(1, 10), "audio_out": torch.zeros(1, 424)})


def test_split_rejects_tokens_outside_their_range(registry, vocab):
    layout = build_layout(registry.task("t2v"), vocab)
    ids = layout.fill({"visual_out": torch.zeros(1, 1280, dtype=torch.long)})
    ids[0, layout.span("visual_out").start + 3] = vocab.id("<eos>")
    with pytest.raises(LayoutError, match="outside span visual_out"):
        layout.split(ids)
    with pytest.raises(LayoutError, match="neither the whole layout"):
        layout.split(ids[:, :10])


# ---------------------------------------------------------------------------- grid positions


def test_grid_places_every_visual_token_in_raster_order(registry, vocab):
    layout = build_layout(registry.task("fp"), vocab, Format(frames=17, height=128, width=128))
    grid = layout.grid_tensor()
    assert grid.shape == (layout.total_length, 3)
    out = layout.span("visual_out")
    t, h, w = out.shape
    expected = torch.stack(
        torch.meshgrid(
            torch.arange(1, t + 1), torch.arange(1, h + 1), torch.arange(1, w + 1), indexing="ij"
        ),
        dim=-1,
    ).reshape(-1, 3)
    assert torch.equal(grid[out.start : out.stop], expected)
    # the condition clip (the first frames) sits on the target's first latent frames
    cond = layout.span("visual_in")
    assert torch.equal(grid[cond.start : cond.stop], expected[: cond.length])
    # special tokens and text have no place in the clip
    for span in layout.spans:
        if span.kind in ("special", "text"):
            assert not grid[span.start : span.stop].any(), span.name


def test_grid_times_audio_by_the_latent_frame_of_its_instant(registry, vocab):
    layout = build_layout(registry.task("a2v"), vocab, Format(frames=17, height=128, width=128))
    audio = layout.span("audio_in")
    levels, frames = audio.shape
    grid = layout.grid_tensor()[audio.start : audio.stop].reshape(levels, frames, 3)
    assert torch.equal(grid[0], grid[-1])  # every level of one audio frame: the same time
    assert not grid[..., 1:].any()  # audio has no row or column
    rate = vocab.audio.frame_rate
    factor = vocab.visual.temporal_factor  # latent t >= 1 holds video frames (t-1)f+1 .. tf
    for k in (0, frames // 3, frames - 1):
        video_frame = int((k + 0.5) / rate * 8)  # 8 fps
        latent = 0 if video_frame == 0 else (video_frame - 1) // factor + 1
        assert int(grid[0, k, 0]) == latent + 1, k
    visual_times = layout.grid_tensor()[layout.span("visual_out").start :, 0]
    assert set(grid[0, :, 0].tolist()) <= set(visual_times.tolist())  # one clock for both
