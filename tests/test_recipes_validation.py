"""Recipe validation: one test per kind of error, each naming the step and the field, all
found before anything runs."""

from __future__ import annotations

import copy
import json

import pytest

from videopoet.data import world
from videopoet.data.world_files import write_sample
from videopoet.recipes import RecipeError, load_recipe, plan_recipe, run_recipe


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    write_sample(world.sample(1, 17, 64, 64, world.WorldConfig(seed=0)), out, seed=0)
    return out


#: a valid two-step chain (Figure 9); each test breaks one thing
GOOD = {
    "name": "chain",
    "inputs": {"image": "frame0.png", "prompt": "a ball"},
    "steps": {
        "animate": {
            "task": "i2v",
            "inputs": {"image": "${inputs.image}", "text": "${inputs.prompt}"},
        },
        "stylize": {
            "task": "stylize",
            "inputs": {"video": "${steps.animate.video}", "text": "an oil painting"},
        },
    },
}


def recipe(**steps):
    """GOOD with steps replaced or added (a value of None removes the step)."""
    out = copy.deepcopy(GOOD)
    for name, step in steps.items():
        if step is None:
            out["steps"].pop(name)
        else:
            out["steps"][name] = step
    return out


@pytest.fixture
def problems(tiny_engine, world_dir, monkeypatch):
    """The problems of a recipe (validated against the tiny bundle); fails if it is valid.
    Run from the world's folder: overrides' relative paths start there."""
    monkeypatch.chdir(world_dir)

    def check(data, *overrides):
        with pytest.raises(RecipeError) as info:
            plan_recipe(data, list(overrides), engine=tiny_engine, base_dir=world_dir)
        message = str(info.value)
        for field in info.value.fields:  # each problem names its step and field
            assert f"\n  - {field}=" in message
        return info.value

    return check


def test_the_base_recipe_is_valid(tiny_engine, world_dir):
    planned = plan_recipe(GOOD, engine=tiny_engine, base_dir=world_dir)
    assert [s.name for s in planned.steps] == ["animate", "stylize"]
    assert planned.steps[0].inputs["image"].path == world_dir / "frame0.png"
    assert str(planned.steps[0].format) == "17x64x64" and planned.steps[1].tokens["prefix"] == 391


def test_unknown_task(problems):
    error = problems(GOOD, "steps.animate.task=i2vv")
    assert error.fields == ["steps.animate.task"]
    assert "'i2vv'" in str(error) and "did you mean i2v" in str(error)


def test_unknown_refiner(problems):
    error = problems(
        recipe(big={"refiner": "sharpen9", "inputs": {"video": "${steps.stylize.video}"}})
    )
    assert error.fields == ["steps.big.refiner"] and "a registered refiner" in str(error)


def test_reference_to_a_step_that_does_not_exist(problems):
    error = problems(GOOD, "steps.stylize.inputs.video=${steps.animat.video}")
    assert error.fields == ["steps.stylize.inputs.video"]
    assert "an earlier step" in str(error) and "did you mean animate" in str(error)


def test_reference_to_a_later_step(problems):
    later = {"task": "t2v", "inputs": {"text": "a box"}}
    error = problems(recipe(later=later), "steps.stylize.inputs.video=${steps.later.video}")
    assert error.fields == ["steps.stylize.inputs.video"]
    assert "later runs after stylize" in str(error)


def test_a_cycle(problems):
    error = problems(GOOD, "steps.animate.inputs.image=${steps.stylize.last_frame}")
    assert error.fields == ["steps.animate.inputs.image"]
    assert "no cycle: animate -> stylize -> animate" in str(error)
    error = problems(GOOD, "steps.stylize.inputs.video=${steps.stylize.video}")
    assert "no cycle: stylize -> stylize" in str(error)


def test_unknown_output_of_a_step(problems):
    error = problems(GOOD, "steps.stylize.inputs.video=${steps.animate.audio}")
    assert error.fields == ["steps.stylize.inputs.video"]
    assert "an output of step animate: video, image, last_frame" in str(error)


def test_wrong_modality_from_a_step(problems):
    data = recipe(
        sound={"task": "v2a", "inputs": {"video": "${steps.animate.video}"}},
        stylize=None,
    )
    data["steps"]["stylize"] = GOOD["steps"]["stylize"] | {
        "inputs": {"video": "${steps.sound.audio}", "text": "oil"}
    }
    error = problems(data)
    assert error.fields == ["steps.stylize.inputs.video"]
    assert "a video: step sound's audio is an audio" in str(error)


def test_wrong_modality_from_a_file(problems):
    error = problems(recipe(hear={"task": "a2v", "inputs": {"audio": "frame0.png"}}))
    assert error.fields == ["steps.hear.inputs.audio"] and "the file has no sound" in str(error)
    error = problems(GOOD, "inputs.image=audio.wav")
    assert error.fields == ["steps.animate.inputs.image"] and "no picture" in str(error)


def test_missing_required_input(problems):
    error = problems(GOOD, "steps.stylize.inputs.text=null")
    assert error.fields == ["steps.stylize.inputs.text"]
    assert "a value (text)" in str(error)


def test_unknown_input(problems):
    error = problems(GOOD, "steps.animate.inputs.vidoe=clip.mp4")
    assert error.fields == ["steps.animate.inputs.vidoe"] and "an input of i2v" in str(error)


def test_format_the_task_cannot_take(problems):
    error = problems(GOOD, "steps.animate.options.format=1x64x64")
    assert error.fields == ["steps.animate.options.format"]
    assert "a video (more than 1 frame) format for task i2v" in str(error)


def test_format_the_model_cannot_take(problems):
    error = problems(GOOD, "defaults.format=17x128x128")
    assert set(error.fields) == {"steps.animate.options.format", "steps.stylize.options.format"}
    assert "one of the bundle's formats: 17x64x64, 1x64x64" in str(error)
    error = problems(GOOD, "steps.stylize.options.format=17x64")
    assert error.fields == ["steps.stylize.options.format"] and "FRAMESxHEIGHTxWIDTH" in str(error)


def test_guidance_on_a_task_without_a_condition_to_drop(problems):
    extend = {
        "repeat": 2,
        "inputs": {"video": "${steps.stylize.video}"},
        "options": {"cfg_scale": 2},
    }
    error = problems(recipe(extend=extend))
    assert error.fields == ["steps.extend.options.cfg_scale"] and "fp" in str(error)


def test_bad_condition_frames_of_repeat(problems):
    extend = {"repeat": 2, "inputs": {"video": "${steps.stylize.video}", "condition_frames": 4}}
    error = problems(recipe(extend=extend))
    assert error.fields == ["steps.extend.inputs.condition_frames"] and "1, 5, 9" in str(error)


def test_unknown_option(problems):
    error = problems(GOOD, "steps.animate.options.temprature=0.5")
    assert error.fields == ["steps.animate.options.temprature"]
    assert "did you mean temperature" in str(error)
    error = problems(GOOD, "defaults.sed=1")
    assert error.fields == ["defaults.sed"] and "did you mean seed" in str(error)


def test_misspelled_step_key_and_two_kinds(problems):
    error = problems(GOOD, "steps.animate.tsk=t2v")
    assert error.fields == ["steps.animate.tsk"] and "did you mean task" in str(error)
    error = problems(GOOD, "steps.animate.repeat=2")
    assert error.fields == ["steps.animate"]
    assert "exactly one of task, refiner, repeat or stage" in str(error)


def test_every_problem_at_once(problems):
    error = problems(GOOD, "steps.animate.task=i2vv", "steps.stylize.options.tempreture=1")
    assert error.fields == ["steps.animate.task", "steps.stylize.options.tempreture"]
    assert str(error).startswith("recipe chain: 2 problems")


def test_import_keys_are_refused(problems):
    data = recipe()
    data["steps"]["animate"]["_target_"] = "os.system"
    error = problems(data)
    assert error.fields == ["steps.animate._target_"] and "no import paths" in str(error)
    error = problems(GOOD, "defaults._component_=torchtune.models.llama")
    assert error.fields == ["defaults._component_"] and "no import paths" in str(error)


def test_paths_outside_the_allowed_folders_are_refused(problems, world_dir, tmp_path):
    outside = tmp_path / "secret.png"
    outside.write_bytes((world_dir / "frame0.png").read_bytes())
    for path in (str(outside), "../" * 12 + str(outside).lstrip("/")):
        error = problems(GOOD, f"inputs.image={path}")
        assert error.fields == ["steps.animate.inputs.image"]
        assert "a file inside the allowed folders" in str(error)
    link = world_dir / "link.png"
    link.symlink_to(outside)  # a link inside pointing out is refused too
    try:
        assert "allowed folders" in str(problems(GOOD, "inputs.image=link.png"))
    finally:
        link.unlink()


def test_allow_adds_a_folder(tiny_engine, world_dir, tmp_path):
    outside = tmp_path / "pic.png"
    outside.write_bytes((world_dir / "frame0.png").read_bytes())
    overrides = [f"inputs.image={outside}"]
    planned = plan_recipe(GOOD, overrides, engine=tiny_engine, base_dir=world_dir, allow=[tmp_path])
    assert planned.steps[0].inputs["image"].path == outside


def test_missing_file(problems):
    error = problems(GOOD, "inputs.image=nothing.png")
    assert error.fields == ["steps.animate.inputs.image"] and "an existing image file" in str(error)


def test_missing_values_name_the_override_to_give(world_dir):
    with pytest.raises(RecipeError) as info:
        load_recipe("animate_then_stylize")
    assert info.value.fields == ["bundle", "inputs.image"]
    assert "give it on the command line: inputs.image=..." in str(info.value)


def test_interpolation_that_does_not_resolve(problems):
    error = problems(GOOD, "steps.stylize.inputs.text=${inputs.styl}")
    assert error.fields == ["steps.stylize.inputs.text"] and "inputs.styl" in str(error)
    error = problems(GOOD, "steps.stylize.inputs.text=oil ${steps.animate.video}")
    assert "${steps.NAME.OUTPUT}" in str(error)


def test_bad_override_and_bad_yaml(tmp_path):
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        load_recipe(GOOD, ["steps.animate"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  a: {task: t2v, inputs: {text: ${inputs.x}}}\n")
    with pytest.raises(Exception, match="valid YAML"):
        load_recipe(bad)


def test_a_recipe_without_a_bundle(world_dir):
    with pytest.raises(RecipeError) as info:
        plan_recipe(GOOD, base_dir=world_dir)
    assert info.value.fields == ["bundle"] and "bundle=DIR" in str(info.value)


def test_nothing_runs_when_a_later_step_is_invalid(tiny_engine, world_dir, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(tiny_engine, "generate", lambda *a, **k: calls.append(a))
    with pytest.raises(RecipeError) as info:
        run_recipe(
            GOOD,
            ["steps.stylize.options.format=1x64x64"],
            engine=tiny_engine,
            base_dir=world_dir,
            out=tmp_path / "run",
        )
    assert info.value.fields == ["steps.stylize.options.format"]
    assert calls == [] and not (tmp_path / "run").exists()


def test_a_skipped_step_then_an_invalid_one_writes_nothing(tiny_engine, tmp_path, one_thread):
    out = tmp_path / "run"
    pic = {"task": "t2i", "inputs": {"text": "a cyan triangle"}}
    run_recipe({"name": "r", "steps": {"pic": pic}}, engine=tiny_engine, out=out)
    before = (out / "run.json").read_bytes()
    anim = {
        "task": "i2v",
        "inputs": {"image": "${steps.pic.image}"},
        "options": {"format": "1x64x64"},
    }
    with pytest.raises(RecipeError) as info:
        run_recipe({"name": "r", "steps": {"pic": pic, "anim": anim}}, engine=tiny_engine, out=out)
    assert info.value.fields == ["steps.anim.options.format"]
    assert (out / "run.json").read_bytes() == before and not (out / "anim").exists()


def test_a_step_failing_at_run_time_is_named_and_recorded(tiny_engine, world_dir, tmp_path):
    from videopoet.recipes import StepError

    out = tmp_path / "run"
    with pytest.raises(StepError) as info:  # a choice the task checks only when it runs
        run_recipe(
            "outpaint_then_stylize",
            [f"inputs.video={world_dir / 'clip.mp4'}", "inputs.direction=diagonal"],
            engine=tiny_engine,
            out=out,
            allow=[world_dir],
        )
    assert str(info.value).startswith("step outpaint (task outpaint): task outpaint: input")
    assert "direction='diagonal'" in str(info.value)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "failed" and run["failed_step"] == "outpaint"


def test_a_reference_as_a_mapping(tiny_engine, world_dir):
    data = recipe()
    data["steps"]["stylize"]["inputs"]["video"] = {"step": "animate", "output": "video"}
    data["steps"]["stylize"]["description"] = "the Figure 9 look"
    planned = plan_recipe(data, engine=tiny_engine, base_dir=world_dir)
    described = planned.describe()["steps"][1]
    assert described["inputs"]["video"] == {"step": "animate", "output": "video"}
    assert described["description"] == "the Figure 9 look"
