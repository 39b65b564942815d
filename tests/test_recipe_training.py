"""The training recipe (`train-world-tiny`) and the `stage` step kind: the whole recipe end to
end with tiny overrides (an interrupted LM stage resumes, a second run skips every stage, the
bundle it makes loads, generates and holds the refiner, its model card holds the evaluate
figures), `videopoet demo --train`, and one test per validation error."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from videopoet import cli
from videopoet.recipes import RecipeError, StageStopped, plan_recipe, run_recipe

#: the recipe shrunk to seconds: 2 world samples per task of two tasks, 4 LM steps, a 16-wide
#: refiner on 2 clips for 2 steps, evaluate on 1 seed of text-to-video
TINY = [
    "inputs.text_encoder=hash",  # weight-free: the test needs no MiniLM load
    "inputs.examples_per_task=2",
    "inputs.eval_examples_per_task=1",
    "inputs.lm_width=64",
    "inputs.lm_steps=4",
    "inputs.audio_steps=2",
    "inputs.mix_steps=2",
    "inputs.refiner_clips=2",
    "inputs.refiner_steps=2",
    "inputs.evaluate_seeds=1",
    "steps.tokenize.options.overrides.tasks=[t2i,t2v]",
    "steps.lm.options.overrides.mixture=null",
    "steps.lm.options.overrides.train.batch_size=2",
    "steps.lm_audio.options.overrides.mixture=null",  # the shards hold no a2v
    "steps.lm_audio.options.overrides.train.batch_size=2",
    "steps.lm_mix.options.overrides.mixture=null",
    "steps.lm_mix.options.overrides.train.batch_size=2",
    "steps.refiner_tokens.options.overrides.data.eval_clips=1",  # the refiner's data too
    "steps.refiner_tokens.options.overrides.data.chunk=2",
    "steps.refiner.options.overrides.stage.width=16",
    "steps.refiner.options.overrides.stage.heads=2",
    "steps.refiner.options.overrides.stage.blocks=1",
    "steps.refiner.options.overrides.stage.steps=2",
    "steps.refiner.options.overrides.eval.sample_clips=0",
    "steps.refiner.options.overrides.train.batch_size=2",
    "steps.evaluate.options.tasks=[t2v]",
    "steps.evaluate.options.untrained=false",
    "steps.evaluate.options.fvd=false",
]
STAGE_STEPS = [
    "init",
    "lm_init",
    "tokenize",
    "lm",
    "lm_audio",
    "lm_mix",
    "refiner_tokens",
    "refiner",
    "final",
    "evaluate",
    "card",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    """The recipe stopped after 2 of its 4 LM steps (as an interrupted run is), then run
    again to the end."""
    out = tmp_path_factory.mktemp("train") / "run"
    stop = "steps.lm.options.overrides.train.stop_at=2"
    with pytest.raises(StageStopped) as info:
        run_recipe("train-world-tiny", [*TINY, stop], out=out)
    stopped_run = json.loads((out / "run.json").read_text())
    result = run_recipe("train-world-tiny", TINY, out=out)
    return SimpleNamespace(out=out, stopped=info.value, stopped_run=stopped_run, result=result)


# ---------------------------------------------------------------------------- end to end


def test_an_interrupted_lm_stage_resumes_where_it_stopped(trained):
    assert trained.stopped.step == "lm" and "stopped at step 2 of 4" in str(trained.stopped)
    assert trained.stopped_run["status"] == "stopped"
    assert trained.stopped_run["failed_step"] == "lm"
    assert trained.stopped_run["order"] == ["init", "lm_init", "tokenize", "lm"]
    steps = trained.result.steps
    assert list(steps) == STAGE_STEPS
    assert steps["init"].skipped and steps["tokenize"].skipped  # finished the first time
    lm = steps["lm"]
    assert not lm.skipped and lm.resumed
    assert lm.result["resumed_from"] == 2 and lm.result["step"] == 4
    record = json.loads((trained.out / "lm" / "stage.json").read_text())
    assert record["status"] == "done" and record["attempts"] == 2
    logged = [json.loads(line) for line in (trained.out / "lm" / "run" / "metrics.jsonl").open()]
    assert [r["step"] for r in logged if "eval" in r] == [2, 4]  # not started over
    assert not any(s.resumed for n, s in steps.items() if n != "lm")


def test_the_bundle_loads_generates_and_holds_the_refiner(trained):
    from videopoet.core.bundle import read_bundle_config
    from videopoet.core.engine import Engine

    bundle = trained.result.final.outputs["bundle"]
    assert bundle == trained.out.resolve() / "final" / "bundle"
    assert read_bundle_config(bundle).refiners == ["superres"]
    engine = Engine.from_pretrained(bundle)
    assert engine.refiners["superres"].scale == 2
    made = engine.generate("t2i", text="a red circle on a blue backdrop", seed=0)
    assert tuple(made.video.shape) == (1, 3, 1, 64, 64)
    assert engine.text_record.name == "hash"  # the input, passed through init to the bundle
    assert engine.lm.config.d_model == 64  # inputs.lm_width, through lm_init


def test_the_model_card_holds_the_run_and_the_evaluate_figures(trained):
    import torch

    card = (trained.result.final.outputs["card"]).read_text()
    figures = json.loads((trained.out / "evaluate" / "evaluation.json").read_text())
    command = "videopoet run train-world-tiny inputs.text_encoder=hash inputs.examples_per_task=2"
    assert command in card
    assert f"--out {trained.out}" in card
    assert "Seed: 0." in card and "| lm_steps | 4 |" in card
    for step in STAGE_STEPS[:-1]:
        assert f"| {step} | " in card  # a wall time per stage
    assert "| lm | train (`videopoet train`) | 2 |" in card  # two runs made it
    assert "CPU cores" in card and f"torch {torch.__version__}" in card
    assert figures["seeds"] == 1 and figures["tasks"] == ["t2v"]
    for key in ("t2v_color_acc", "visual_tokenizer_psnr", "superres_psnr", "bicubic_psnr"):
        assert f"| {key} | {figures[key]:.3g} |" in card, key
    assert "refiners: superres (2x)" in card


def test_a_second_run_skips_every_stage(trained, capsys):
    card = trained.result.final.outputs["card"]
    before = card.stat().st_mtime_ns
    # how many threads (or which device) a stage runs on is no reason to redo it
    run_only = ["steps.lm.options.overrides.train.num_threads=2", "--quiet"]
    args = ["run", "train-world-tiny", *TINY, *run_only, "--out", str(trained.out)]
    assert cli.main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [s["name"] for s in summary["steps"]] == STAGE_STEPS
    assert all(s["skipped"] for s in summary["steps"])
    assert card.stat().st_mtime_ns == before
    assert json.loads((trained.out / "run.json").read_text())["status"] == "ok"


def test_demo_train_runs_the_recipe_then_the_demo(trained, tmp_path, capsys):
    gallery = tmp_path / "gallery"
    args = ["demo", "--train", str(trained.out), "--train-set", *TINY, "--out", str(gallery)]
    args += ["--cases", "t2i", "--samples", "1", "--no-untrained", "--quiet"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    bundle = trained.out.resolve() / "final" / "bundle"
    assert f"trained bundle: {bundle}" in out
    assert f"videopoet demo --bundle {bundle}" in out
    assert (gallery / "index.html").is_file()
    assert json.loads((gallery / "demo.json").read_text())["bundle"] == str(bundle)
    # the trained bundle or another one, not both
    assert cli.main(["demo", "--train", "--bundle", "b", "--out", str(tmp_path / "g")]) == 2
    assert "no --bundle with --train" in capsys.readouterr().err


def test_a_changed_option_reruns_that_stage_and_those_after_it(trained):
    """(Last of the tests on the shared run: it changes the run.)"""
    result = run_recipe("train-world-tiny", [*TINY, "inputs.evaluate_seeds=2"], out=trained.out)
    ran = [name for name, step in result.steps.items() if not step.skipped]
    assert ran == ["evaluate", "card"]
    assert "`videopoet evaluate --seeds 2`" in result.final.outputs["card"].read_text()
    # a value training may not resume with starts the LM over (the refiner does not need it)
    changed = [*TINY, "inputs.evaluate_seeds=2", "steps.lm.options.overrides.train.lr=0.001"]
    result = run_recipe("train-world-tiny", changed, out=trained.out)
    ran = [name for name, step in result.steps.items() if not step.skipped]
    assert ran == ["lm", "lm_audio", "lm_mix", "final", "evaluate", "card"]
    lm = result.steps["lm"]
    assert lm.result["resumed_from"] is None and lm.result["step"] == 4 and not lm.resumed
    assert json.loads((trained.out / "lm" / "stage.json").read_text())["attempts"] == 1
    # another LM size: a new untrained LM and its training; the shards and the refiner stay
    result = run_recipe("train-world-tiny", [*changed, "inputs.lm_width=32"], out=trained.out)
    ran = [name for name, step in result.steps.items() if not step.skipped]
    assert ran == ["lm_init", "lm", "lm_audio", "lm_mix", "final", "evaluate", "card"]
    assert result.steps["lm_init"].result["parameters"] < result.steps["init"].result["parameters"]


# ---------------------------------------------------------------------------- small recipes


def two_stages(**card):
    return {
        "name": "mini",
        "steps": {
            "init": {"stage": "init"},
            "card": {"stage": "model-card", "inputs": {"bundle": "${steps.init.bundle}"}} | card,
        },
    }


def test_force_starts_every_stage_over(tmp_path, one_thread):
    out = tmp_path / "run"
    first = run_recipe(two_stages(), out=out)
    assert not any(s.skipped for s in first.steps.values())
    assert all(s.skipped for s in run_recipe(two_stages(), out=out).steps.values())
    (out / "init" / "left-over").write_text("x")
    forced = run_recipe(two_stages(), out=out, force=True)
    assert not any(s.skipped for s in forced.steps.values())
    assert not (out / "init" / "left-over").exists()  # the stage's folder was emptied
    assert "# mini" in (out / "init" / "bundle" / "MODEL_CARD.md").read_text()
    assert json.loads((out / "run.json").read_text())["forced"] is True


def test_a_folder_of_other_files_is_refused(tmp_path):
    (tmp_path / "init").mkdir()
    (tmp_path / "init" / "mine.txt").write_text("x")
    from videopoet.core.errors import ConfigError

    with pytest.raises(ConfigError, match="holds other files"):
        run_recipe(two_stages(), out=tmp_path)
    assert (tmp_path / "init" / "mine.txt").is_file()


def test_dry_run_needs_no_bundle(capsys):
    assert cli.main(["run", "train-world-tiny", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "bundle:" not in text.splitlines()[1]
    assert "1. init: stage init" in text and "-> refiner_dir" in text
    assert "overrides: world.examples_per_task=6400" in text
    assert cli.main(["run", "train-world-tiny", "inputs.lm_steps=7", "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["bundle"] is None and [s["name"] for s in plan["steps"]] == STAGE_STEPS
    steps = {s["name"]: s for s in plan["steps"]}
    lm = steps["lm"]
    assert lm["stage"] == "train" and lm["config"]["train"]["steps"] == 7
    assert lm["inputs"]["bundle"] == {"step": "lm_init", "output": "bundle"}
    assert steps["lm_init"]["options"]["model"] == {"d_model": 128}  # inputs.lm_width
    assert (
        cli.main(["run", "train-world-tiny", "steps.init.options.seed=3", "--dry-run", "--json"])
        == 0
    )
    lm_init = {s["name"]: s for s in json.loads(capsys.readouterr().out)["steps"]}["lm_init"]
    assert lm_init["options"]["seed"] == 3  # init's settings are lm_init's
    assert steps["tokenize"]["inputs"]["bundle"] == {"step": "init", "output": "bundle"}
    assert steps["refiner"]["inputs"]["bundle"] == {"step": "init", "output": "bundle"}
    assert lm["config"]["mixture"]["t2v"] == 6  # the rest of configs/lm/tiny.yaml
    assert lm["inputs"]["shards"] == {"step": "tokenize", "output": "shards"}
    audio, mix, final = steps["lm_audio"], steps["lm_mix"], steps["final"]
    assert {task for task, weight in audio["config"]["mixture"].items() if weight} == {"a2v", "v2a"}
    assert audio["inputs"]["bundle"] == {"step": "lm", "output": "bundle"}
    assert mix["config"]["mixture"]["a2v"] == 3 and mix["config"]["stages"]["first_fraction"] == 0
    assert mix["inputs"]["bundle"] == {"step": "lm_audio", "output": "bundle"}
    assert final["inputs"]["bundle"] == {"step": "lm_mix", "output": "bundle"}


def test_recipes_lists_it(capsys):
    assert cli.main(["recipes"]) == 0
    assert "train-world-tiny" in capsys.readouterr().out


# ---------------------------------------------------------------------------- validation


def problems(recipe, *overrides):
    """The RecipeError of a recipe that must fail validation."""
    with pytest.raises(RecipeError) as info:
        plan_recipe(recipe, list(overrides))
    return info.value


def builtin(*overrides):
    return problems("train-world-tiny", *overrides)


def test_unknown_stage_suggests_one():
    error = problems({"steps": {"a": {"stage": "tokenise"}}})
    assert error.fields == ["steps.a.stage"] and "did you mean tokenize" in str(error)


def test_unknown_and_bad_options():
    error = builtin("steps.init.options.text_encodr=hash", "steps.evaluate.options.seeds=0")
    assert error.fields == ["steps.init.options.text_encodr", "steps.evaluate.options.seeds"]
    assert "an option of stage init" in str(error) and "did you mean text_encoder" in str(error)
    assert "greater than or equal to 1" in str(error)


def test_unregistered_names_in_options():
    error = builtin("inputs.text_encoder=minilmm", "steps.init.options.preset=tinyy")
    assert set(error.fields) == {
        "steps.init.options.text_encoder",
        "steps.init.options.preset",
        "steps.lm_init.options.text_encoder",  # lm_init takes init's settings
        "steps.lm_init.options.preset",
    }
    assert "did you mean minilm" in str(error) and "did you mean tiny" in str(error)
    error = builtin("steps.evaluate.options.tasks=[t2vv]")
    assert error.fields == ["steps.evaluate.options.tasks"] and "did you mean t2v" in str(error)


def test_init_model_settings_are_checked_by_field():
    error = builtin(
        "steps.init.options.model={grid_positions: maybe, grid_size: 0}",
    )
    assert set(error.fields) == {
        "steps.init.options.model.grid_positions",
        "steps.init.options.model.grid_size",
    }
    assert "maybe" in str(error) and "greater than or equal to 1" in str(error)
    error = builtin("steps.init.options.model={vocab_size: 9}")
    assert error.fields == ["steps.init.options.model.vocab_size"]
    assert "the tokenizers and text encoder set it" in str(error)
    # a valid one passes: the plan is made
    assert plan_recipe("train-world-tiny", ["steps.init.options.model={grid_positions: false}"])


def test_unknown_and_missing_inputs():
    error = builtin(
        "steps.tokenize.inputs.bundel=${steps.init.bundle}", "steps.tokenize.inputs.bundle=null"
    )
    assert error.fields == ["steps.tokenize.inputs.bundel", "steps.tokenize.inputs.bundle"]
    assert "did you mean bundle" in str(error) and "stage tokenize takes bundle" in str(error)


def test_references_of_the_wrong_kind_missing_or_later():
    error = builtin(
        "steps.lm.inputs.bundle=${steps.tokenize.shards}",
        "steps.lm.inputs.shards=${steps.init.shards}",
        "steps.tokenize.inputs.bundle=${steps.final.bundle}",
    )
    assert error.fields == [
        "steps.tokenize.inputs.bundle",
        "steps.lm.inputs.bundle",
        "steps.lm.inputs.shards",
    ]
    text = str(error)
    assert "no cycle: tokenize -> final -> lm_mix -> tokenize" in text
    assert "an earlier stage's bundle (step tokenize's shards is not)" in text
    assert "an output of step init: bundle" in text


def test_a_path_input_must_exist(tmp_path):
    error = builtin(f"steps.tokenize.inputs.bundle={tmp_path / 'nowhere'}")
    assert error.fields == ["steps.tokenize.inputs.bundle"] and "bundle directory" in str(error)


def test_unknown_config_and_bad_overrides():
    error = builtin(
        "steps.tokenize.options.config=lm/tiny_tokenise",
        "steps.lm.options.overrides.train.stepz=3",
        "steps.refiner.options.overrides.train.lr=-1",
    )
    assert error.fields == [
        "steps.tokenize.options.config",
        "steps.lm.options.overrides.train.stepz",
        "steps.refiner.options.overrides.train.lr",
    ]
    text = str(error)
    assert "did you mean lm/tiny_tokenize" in text and "did you mean steps" in text
    assert "greater than 0" in text
    error = builtin("steps.tokenize.options.config=missing.yaml")
    assert error.fields == ["steps.tokenize.options.config"] and "existing YAML" in str(error)


def test_keys_the_stage_sets_cannot_be_overridden():
    error = builtin(
        "steps.tokenize.options.overrides.out=elsewhere",
        "steps.lm.options.overrides.train.out_dir=elsewhere",
        "steps.refiner.options.overrides.tokenizer=t",
    )
    assert error.fields == [
        "steps.tokenize.options.overrides.out",
        "steps.lm.options.overrides.train.out_dir",
        "steps.refiner.options.overrides.tokenizer",
    ]
    assert "stage train sets train.out_dir to the step's folder" in str(error)


def test_stages_and_tasks_do_not_mix_and_need_no_bundle():
    recipe = {
        "bundle": "b",
        "steps": {
            "init": {"stage": "init"},
            "clip": {"task": "t2v", "inputs": {"text": "a ball"}},
            "both": {"stage": "init", "task": "t2v"},
        },
    }
    error = problems(recipe)
    assert error.fields == ["steps.both"]  # the schema first
    assert "exactly one of task, refiner, repeat or stage" in str(error)
    del recipe["steps"]["both"]
    error = problems(recipe)
    assert error.fields == ["bundle", "steps.clip.task"]
    assert "no bundle: a recipe of stages makes its own" in str(error)
    assert "a recipe of stages holds only stage steps" in str(error)


def test_nothing_runs_or_is_written_before_validation_passes(tmp_path):
    with pytest.raises(RecipeError):
        run_recipe(
            "train-world-tiny", ["steps.lm.options.overrides.train.stepz=3"], out=tmp_path / "r"
        )
    assert not (tmp_path / "r").exists()


def test_stage_outputs_are_not_step_keys():
    """``${steps.NAME.KEY}`` with a step's key is an interpolation, so no output may be one."""
    from videopoet.recipes.schema import Step
    from videopoet.recipes.stages import STAGE_OUTPUTS

    assert not set(STAGE_OUTPUTS) & set(Step.model_fields)


def test_the_docs_recipe_of_stages_plans():
    import re
    from pathlib import Path

    import yaml

    docs = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"
    blocks = re.findall(r"```yaml\n(.*?)```", docs.read_text(), flags=re.S)
    staged = [yaml.safe_load(b) for b in blocks if "stage:" in b]
    assert staged
    for recipe in staged:
        plan = plan_recipe(recipe)
        assert plan.stages and plan.bundle is None
        assert plan.step("lm").config["train"]["steps"] == 500


def test_a_folder_identity_is_its_content_not_its_file_times(tmp_path):
    """A checkout or a copy gives committed weights new modification times; the stages that
    read them must still be skipped on a re-run (else a day's tokenize starts over)."""
    import os
    import shutil

    from videopoet.recipes.runner import bundle_identity

    folder = tmp_path / "tokenizer"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "config.json").write_text("{}")
    (folder / "MODEL_CARD.md").write_text("card")
    before = bundle_identity(folder)
    os.utime(folder / "model.safetensors", (1, 1))
    (folder / "MODEL_CARD.md").write_text("a longer card")
    copy = shutil.copytree(folder, tmp_path / "copy")
    assert bundle_identity(folder) == before == bundle_identity(copy)
    (folder / "model.safetensors").write_bytes(b"weightz")
    assert bundle_identity(folder) != before
