"""`videopoet evaluate` and the evaluation's figures (videopoet/data/evaluation.py).

The figures are checked to measure what they claim: each gives its perfect score when the
"generated" media are the world's own and a poor one on noise (or on a mismatch). The command
runs end to end on an untrained tiny bundle served at a small format (9x32x32) to stay fast.
"""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest
import torch

from videopoet.core.errors import ConfigError
from videopoet.data import evaluation as ev
from videopoet.data import world
from videopoet.data.evaluation import FIGURES, PROBES, Output

FMT = type("Fmt", (), {"frames": 17, "height": 64, "width": 64})()
IMAGE_FMT = type("Fmt", (), {"frames": 1, "height": 64, "width": 64})()


def _noise(like: torch.Tensor, seed: int, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(like.shape, generator=generator) * 2 - 1) * scale


def _figures(task: str, make_output, count: int = 3) -> dict:
    """A probe's figures when ``make_output(item, n)`` stands in for the generated media."""
    probe = PROBES[task]
    rows = []
    fmt = IMAGE_FMT if probe.image else FMT
    for n, (_, item) in enumerate(ev.held_out(probe, count, fmt, None, {})):
        rows.append(probe.measure(make_output(item, n), item, probe.inputs(item, n)))
    return probe.summarize(rows)


def _truth(item, n):
    return Output(item.video, item.audio[0], item.sample_rate)


def _noisy(item, n):
    return Output(_noise(item.video, n), _noise(item.audio[0], n, 0.5), item.sample_rate)


# ---------------------------------------------------------------------------- the figures


def test_t2v_accuracy_on_ground_truth_and_noise():
    truth = _figures("t2v", _truth)
    assert truth == {
        "t2v_color_acc": 1.0,
        "t2v_shape_acc": 1.0,
        "t2v_direction_acc": 1.0,
        "t2v_found": 3,
    }
    noise = _figures("t2v", _noisy)
    assert noise["t2v_shape_acc"] + noise["t2v_direction_acc"] <= 2 / 3
    assert noise["t2v_color_acc"] <= 1 / 3


def test_t2v_counts_a_blank_clip_as_a_miss():
    blank = _figures("t2v", lambda item, n: Output(torch.zeros_like(item.video), None, 16000))
    assert blank["t2v_found"] == 0
    assert blank["t2v_color_acc"] == blank["t2v_direction_acc"] == 0.0


def test_fp_position_error_on_ground_truth_and_noise():
    assert _figures("fp", _truth)["fp_position_error"] < 0.5
    noise = _figures("fp", _noisy)
    assert noise["fp_position_error"] is None or noise["fp_position_error"] > 10.0
    blank = _figures("fp", lambda item, n: Output(torch.zeros_like(item.video), None, 16000))
    assert blank == {"fp_position_error": None, "fp_measured": 0}


@pytest.mark.parametrize("task", ["inpaint", "outpaint", "i2v"])
def test_psnr_figures_on_ground_truth_and_noise(task):
    key = {"i2v": "i2v_first_frame_psnr"}.get(task, f"{task}_psnr")
    assert _figures(task, _truth)[key] == ev.PSNR_CAP
    assert _figures(task, _noisy)[key] < 12.0


def test_inpaint_psnr_looks_only_inside_the_mask():
    def outside_wrong(item, n):
        mask = PROBES["inpaint"].mask(item)
        return Output(torch.where(mask[None], item.video, -item.video), None, 16000)

    assert _figures("inpaint", outside_wrong)["inpaint_psnr"] == ev.PSNR_CAP


def test_stylize_flow_agreement_on_ground_truth_and_noise():
    assert _figures("stylize", _truth)["stylize_flow_epe"] == pytest.approx(0.0, abs=1e-6)
    assert _figures("stylize", _noisy)["stylize_flow_epe"] > 0.5


@pytest.mark.parametrize("task", ["a2v", "v2a"])
def test_pitch_height_correlation_on_ground_truth_and_mismatch(task):
    truth = _figures(task, _truth)
    assert truth[f"{task}_corr"] > 0.95 and truth[f"{task}_measured"] == 3
    # the same media played backwards: height and pitch no longer go together
    flipped = _figures(
        task, lambda item, n: Output(item.video.flip(1), item.audio[0].flip(0), 16000)
    )
    assert flipped[f"{task}_corr"] is None or flipped[f"{task}_corr"] < 0.5
    noise = _figures(task, _noisy)
    assert noise[f"{task}_corr"] is None or abs(noise[f"{task}_corr"]) < 0.5


def test_pitch_tasks_use_vertically_moving_clips():
    for task in ("a2v", "v2a", "avcont"):
        for _, item in ev.held_out(PROBES[task], 4, FMT, None, {}):
            assert item.motion in ev.VERTICAL


def test_t2i_accuracy_on_ground_truth_and_noise():
    assert _figures("t2i", _truth) == {"t2i_color_acc": 1.0, "t2i_shape_acc": 1.0}
    noise = _figures("t2i", _noisy)
    assert noise["t2i_color_acc"] + noise["t2i_shape_acc"] <= 2 / 3


def test_avcont_continuation_and_its_own_pitch_height_agreement():
    truth = _figures("avcont", _truth)
    assert truth["avcont_position_error"] < 0.5
    assert truth["avcont_corr"] > 0.95 and truth["avcont_measured"] == 3
    noise = _figures("avcont", _noisy)
    error = noise["avcont_position_error"]
    assert error is None or error > 10.0
    assert noise["avcont_corr"] is None or abs(noise["avcont_corr"]) < 0.5


@pytest.mark.parametrize("task", ["uncond", "uncond_image"])
def test_unconditional_frechet_distance_is_zero_on_the_real_set_and_large_on_noise(task):
    key = f"{task}_fd"
    assert _figures(task, _truth, count=4)[key] == pytest.approx(0.0, abs=1e-6)
    blank = _figures(task, lambda item, n: Output(torch.zeros_like(item.video), None, 16000), 4)
    assert blank[key] > 0.5
    assert _figures(task, _noisy, count=4)[key] > 0.5
    assert PROBES[task].summarize([{"features": [0.0], "real": [0.0]}]) == {key: None}


class _Codec:
    """Stands in for an engine's visual tokenizer: ``decode(encode(clip))`` is ``render``'s."""

    visual = True

    def __init__(self, render):
        self.render = render
        self.visual_spec = type("Spec", (), {"latent_shape": lambda self, *shape: shape})()

    def encode_video(self, video):
        return video

    def decode_video(self, tokens, shape):
        return self.render(tokens)[None]


def test_tokenizer_ceiling_reads_a_decoder_that_drops_motion():
    items = [item for _, item in ev.held_out(ev.Probe(), 6, FMT, None, {})]
    exact = ev.tokenizer_figures(_Codec(lambda video: video), items, FMT)
    assert exact == {
        "visual_tokenizer_psnr": ev.PSNR_CAP,
        "visual_tokenizer_color_acc": 1.0,
        "visual_tokenizer_shape_acc": 1.0,
        "visual_tokenizer_direction_acc": 1.0,
    }
    frozen = ev.tokenizer_figures(  # every frame is frame 0: colour and shape kept, motion lost
        _Codec(lambda video: video[:, :1].expand_as(video)), items, FMT
    )
    moving = sum(item.motion != "still" for item in items)
    assert moving >= 3
    assert frozen["visual_tokenizer_color_acc"] == 1.0
    assert frozen["visual_tokenizer_direction_acc"] == pytest.approx(1 - moving / len(items))
    assert frozen["visual_tokenizer_psnr"] < ev.PSNR_CAP


def test_psnr_is_capped_and_masked():
    clip = world.sample(world.EVAL_OFFSET, 3, 16, 16).video
    assert ev.psnr(clip, clip) == ev.PSNR_CAP
    assert math.isnan(ev.psnr(clip, clip, torch.zeros(3, 16, 16, dtype=torch.bool)))
    assert ev.psnr(clip, clip.clamp(-0.5, 0.5)) < 30


# ---------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
    """An untrained tiny bundle (committed tiny tokenizers, LM seed 0) serving 9x32x32."""
    from videopoet.cli_generate import TINY_AUDIO, TINY_VISUAL
    from videopoet.core.engine import Engine

    path = tmp_path_factory.mktemp("evaluate") / "tiny"
    engine = Engine.create(
        preset="tiny",
        visual_dir=TINY_VISUAL,
        audio_dir=TINY_AUDIO,
        formats=["9x32x32", "1x32x32"],
        seed=0,
    )
    return engine.save_pretrained(path)


def _run(argv: list[str]) -> int:
    """The `videopoet` command when it has `evaluate`, else the module's own entry."""
    from videopoet import cli, cli_evaluate

    commands = cli.build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001
    if "evaluate" in commands:
        return cli.main(["evaluate", *argv])
    return cli_evaluate.main(argv)


@pytest.fixture(scope="module")
def report(small_bundle, one_thread):
    """(exit code, stdout) of a 2-seed JSON run (pytest's capsys is per test)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = _run([str(small_bundle), "--seeds", "2", "--json", "--quiet"])
    return code, buffer.getvalue()


def test_evaluate_json_has_every_figure_and_the_untrained_block(report, small_bundle):
    code, out = report
    assert code == 0
    record = json.loads(out.strip().splitlines()[-1])
    assert record["seeds"] == 2 and record["format"] == "9x32x32"
    assert record["bundle"] == str(small_bundle)
    assert set(record["tasks"]) == set(PROBES) and record["skipped"] == {}
    # no generation section in the bundle: every task sampled as before (guidance off)
    plain = {"cfg_scale": 1.0, "temperature": 1.0, "top_k": None, "top_p": None}
    assert record["sampling"] == {task: plain for task in PROBES}
    for block in (record, record["untrained"]):
        assert set(FIGURES) <= set(block)
        for key in FIGURES:
            value = block[key]
            # correlations and position errors are null when nothing could be measured
            nullable = key in (
                "a2v_corr",
                "v2a_corr",
                "fp_position_error",
                "avcont_corr",
                "avcont_position_error",
            )
            assert (value is None and nullable) or math.isfinite(value), (key, value)
        assert 0 <= block["t2v_found"] <= 2 and 0 <= block["fp_measured"] <= 2
        for key in ("t2v_color_acc", "t2v_shape_acc", "t2v_direction_acc"):
            assert 0.0 <= block[key] <= 1.0
    # an untrained bundle made with seed 0 is its own untrained twin: the same figures
    assert {k: record[k] for k in FIGURES} == record["untrained"]


def test_evaluate_table_and_task_filter(small_bundle, one_thread, capsys):
    code = _run([str(small_bundle), "--seeds", "1", "--tasks", "v2a", "--no-untrained", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "v2a_corr" in out and "visual_tokenizer_psnr" in out and "t2v_color_acc" not in out


def test_evaluate_rejects_an_unknown_task_before_loading(small_bundle, capsys):
    assert _run([str(small_bundle), "--tasks", "t2v,nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_first_moves_the_held_out_range_for_tuning_apart_from_reporting(small_bundle, one_thread):
    from videopoet.core.engine import Engine
    from videopoet.data.evaluation import evaluate
    from videopoet.data.world import EVAL_OFFSET

    engine = Engine.from_pretrained(small_bundle)
    options = {"seeds": 2, "tasks": ["t2v"], "untrained": False, "progress": False}
    reported = evaluate(engine, **options)
    tuning = evaluate(engine, first=1000, **options)
    assert [r["index"] for r in reported.rows["bundle"]["t2v"]] == [EVAL_OFFSET, EVAL_OFFSET + 1]
    assert [r["index"] for r in tuning.rows["bundle"]["t2v"]] == [
        EVAL_OFFSET + 1000,
        EVAL_OFFSET + 1001,
    ]
    assert tuning.to_json()["first"] == 1000 and reported.to_json()["first"] == 0
    with pytest.raises(ConfigError, match="first"):
        evaluate(engine, first=-1, **options)
