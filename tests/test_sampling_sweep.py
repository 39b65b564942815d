"""benchmarks/sampling_sweep.py: the grid per task, the score read from a probe's summary, and
``--write`` storing only the settings that beat the bundle's current ones."""

from __future__ import annotations

import argparse
import math
import shutil

import pytest

from videopoet.core.bundle import read_bundle_config
from videopoet.core.engine import Engine
from videopoet.core.generation_config import GenerationDefaults
from videopoet.data import evaluation


@pytest.fixture(scope="module")
def sweep(load_benchmark):
    return load_benchmark("sampling_sweep")


def _args(**given) -> argparse.Namespace:
    return argparse.Namespace(
        **{"cfg": [1.0, 4.0], "temperature": [0.5, 1.0], "top_k": [0, 8]} | given
    )


def test_guidance_is_swept_only_where_a_condition_can_be_dropped(sweep, tiny_engine):
    guided = sweep.grid(tiny_engine, "t2v", _args())
    assert len(guided) == 8 and {s["cfg_scale"] for s in guided} == {1.0, 4.0}
    unguided = sweep.grid(tiny_engine, "fp", _args())
    assert len(unguided) == 4 and all("cfg_scale" not in s for s in unguided)


def test_scores_are_higher_for_better_figures(sweep):
    assert sweep.score("fp", {"fp_position_error": 2.0}) > sweep.score(
        "fp", {"fp_position_error": 9.0}
    )
    t2v = {"t2v_color_acc": 1.0, "t2v_shape_acc": 0.5, "t2v_direction_acc": 0.0}
    assert sweep.score("t2v", t2v) == pytest.approx(0.5)
    assert sweep.score("a2v", {"a2v_corr": None}) == -math.inf  # nothing measured: never best
    assert sweep.score("v2a", {"v2a_corr": math.nan}) == -math.inf


def test_a_setting_is_scored_by_generating_with_it(sweep, tiny_engine, one_thread):
    fmt = evaluation.video_format(tiny_engine)
    plan = evaluation.held_out(evaluation.PROBES["i2v"], 1, fmt, None, {}, first=1000)
    greedy = sweep.run(tiny_engine, "i2v", plan, fmt, {"temperature": 0.0, "top_k": 0})
    assert math.isfinite(greedy)
    again = sweep.run(tiny_engine, "i2v", plan, fmt, {"temperature": 0.0, "top_k": 0})
    assert again == greedy  # seeded as evaluate seeds: a repeatable score


def test_write_keeps_the_bundle_setting_unless_beaten(sweep, tiny_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    before = read_bundle_config(bundle).generation or GenerationDefaults()
    results = {
        "t2v": {
            "current_score": 0.4,
            "best": {"cfg_scale": 5.0, "temperature": 0.75, "top_k": 32},
            "best_score": 0.6,
        },
        "v2a": {
            "current_score": 0.3,
            "best": {"cfg_scale": 2.0, "temperature": 1.0, "top_k": 0},
            "best_score": 0.45,
        },
        "fp": {"current_score": -5.0, "best": {"temperature": 0.5, "top_k": 8}, "best_score": -5.0},
    }
    sweep.write_best(str(bundle), results)
    after = read_bundle_config(bundle).generation
    assert set(after.tasks) == {"t2v", "v2a"}  # fp's best only tied its current setting
    assert after.for_task("t2v") == {
        "cfg_scale": 5.0,
        "temperature": 0.75,
        "top_k": 32,
        "top_p": None,
    }
    assert after.for_task("v2a")["top_k"] is None  # top-k 0 (off) is stored as null
    bundle_level = ("cfg_scale", "temperature", "top_k", "top_p")
    assert [getattr(after, k) for k in bundle_level] == [getattr(before, k) for k in bundle_level]
    engine = Engine.from_pretrained(bundle)
    assert engine.sampling_for("t2v")["cfg_scale"] == 5.0
