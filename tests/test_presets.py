"""Each preset's context holds the layouts it is meant for (issue 9: formats that fit)."""

import pytest

from videopoet.core.declarations import IMAGE_FORMAT, VIDEO_FORMATS, parse_format
from videopoet.core.model import PRESETS
from videopoet.core.vocabulary import Vocabulary
from videopoet.sequences.layout import build_layout


def _longest(registry, vocab, formats):
    lengths = []
    for spec in registry.tasks.values():
        for fmt in formats:
            if fmt.is_image != (spec.target.visual == "image"):
                continue
            lengths.append(build_layout(spec, vocab, fmt, strict_format=False).total_length)
    return max(lengths)


def test_tiny_preset_holds_every_demo_layout(registry):
    vocab = Vocabulary.from_registry(registry, visual="magvit2_tiny", audio="encodec16k_tiny")
    longest = _longest(registry, vocab, [parse_format("17x64x64"), parse_format("1x64x64")])
    assert 700 < longest <= PRESETS["tiny"]["max_seq_len"]


@pytest.mark.parametrize("preset", ["small", "300m", "1b", "8b"])
def test_paper_presets_hold_every_paper_layout(registry, vocab, preset):
    longest = _longest(registry, vocab, [*VIDEO_FORMATS, IMAGE_FORMAT])
    assert longest > 9_931  # inpainting at 41x224x128, the example, is not the longest
    assert longest <= PRESETS[preset]["max_seq_len"]


def test_a_layout_too_long_for_the_model_is_refused_before_any_work(tiny_engine):
    from videopoet.core.errors import LayoutError

    tiny_engine.lm.config.max_seq_len, saved = 100, tiny_engine.lm.config.max_seq_len
    try:
        with pytest.raises(LayoutError, match=r"needs 392 tokens; this model holds 100"):
            tiny_engine.generate("t2v", text="a red square moves left")
    finally:
        tiny_engine.lm.config.max_seq_len = saved


def test_a_layout_wider_than_the_grid_embeddings_is_refused_before_any_work(tiny_engine):
    from videopoet.core.errors import LayoutError

    assert tiny_engine.lm.config.grid_positions  # every preset places tokens on the grid
    tiny_engine.lm.config.grid_size, saved = 4, tiny_engine.lm.config.grid_size
    try:  # 17x64x64: 5 latent frames of 8 x 8
        with pytest.raises(LayoutError, match=r"up to latent time/row/column 8.*hold 4"):
            tiny_engine.generate("t2v", text="a red square moves left")
    finally:
        tiny_engine.lm.config.grid_size = saved
