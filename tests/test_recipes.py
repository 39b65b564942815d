"""YAML recipes end to end on an untrained tiny bundle: every built-in recipe, the chain's
hand-off, skip on re-run and --force, a refiner step, the CLI and the docs' example."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import videopoet
from videopoet import cli
from videopoet.data import world
from videopoet.data.media import probe
from videopoet.data.world_files import write_sample
from videopoet.recipes import RecipeResult, builtin_recipes, load_recipe, plan_recipe, run_recipe

DOCS = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"
BUILTINS = {
    "animate_then_stylize",
    "outpaint_then_stylize",
    "inpaint_with_prompt",
    "text_to_audiovisual",
    "long_video",
    "plugin_reverse",
    "train-world-tiny",  # a recipe of stages: tests/test_recipe_training.py
}


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    """A world sample's files: clip.mp4 (with sound), frame0.png, audio.wav, structure.mp4."""
    out = tmp_path_factory.mktemp("world")
    write_sample(world.sample(3, 17, 64, 64, world.WorldConfig(seed=0)), out, seed=0)
    return out


@pytest.fixture
def in_world(world_dir, monkeypatch):
    monkeypatch.chdir(world_dir)  # file inputs resolve against (and stay inside) the cwd
    return world_dir


def spy_generate(engine, monkeypatch):
    """Record (task, inputs) of each engine.generate call, in order."""
    calls = []
    original = engine.generate

    def generate(task, **kwargs):
        calls.append((task, kwargs))
        return original(task, **kwargs)

    monkeypatch.setattr(engine, "generate", generate)
    return calls


# ---------------------------------------------------------------------------- built-ins


def test_builtins_are_listed_with_descriptions(capsys):
    rows = builtin_recipes()
    assert {r["name"] for r in rows} == BUILTINS
    assert all(r["description"] and Path(r["path"]).is_file() for r in rows)
    assert cli.main(["recipes", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [set(r) for r in listed] == [{"name", "description"}] * len(BUILTINS)
    assert {r["name"] for r in listed} == BUILTINS
    assert cli.main(["recipes"]) == 0
    assert "long_video" in capsys.readouterr().out


def test_builtins_document_their_command():
    for row in builtin_recipes():
        text = Path(row["path"]).read_text()
        assert text.startswith("#") and f"videopoet run {row['name']}" in text, row["name"]


#: recipe -> (overrides, {step: (frames or None, has audio)}) on the tiny bundle (17x64x64)
END_TO_END = {
    "animate_then_stylize": (["inputs.image=frame0.png"], {"animate": 17, "stylize": 17}),
    "outpaint_then_stylize": (
        ["inputs.video=clip.mp4", "inputs.direction=left"],
        {"outpaint": 17, "stylize": 17},
    ),
    "inpaint_with_prompt": (["inputs.video=clip.mp4", "inputs.mask=8,8,24,24"], {"inpaint": 17}),
    "text_to_audiovisual": ([], {"clip": 17, "sound": 17}),
    "long_video": ([], {"start": 17, "extend": 17 + 3 * 12}),
    "plugin_reverse": ([], {"clip": 17, "reverse": 17}),
}


@pytest.mark.parametrize("name", sorted(END_TO_END))
def test_builtin_recipe_runs_end_to_end(name, tiny_engine, in_world, tmp_path, one_thread):
    if name == "plugin_reverse" and "reverse" not in tiny_engine.registry.tasks:
        pytest.fail("install it first: pip install -e examples/videopoet-example-plugin")
    overrides, frames = END_TO_END[name]
    result = run_recipe(name, overrides, engine=tiny_engine, out=tmp_path / "run")
    assert isinstance(result, RecipeResult) and list(result.steps) == list(frames)
    for step, count in frames.items():
        done = result.steps[step]
        assert not done.skipped and done.folder == tmp_path / "run" / step
        assert done.video.shape == (3, count, 64, 64)
        mp4 = done.folder / "video.mp4"
        assert mp4 in done.files and mp4.is_file()
        info = probe(mp4)
        assert (info.width, info.height, info.video_frames) == (64, 64, count)
        assert info.duration == pytest.approx(count / 8, abs=0.01)
        has_sound = step == "sound"  # only video-to-audio makes sound in these chains
        assert info.has_audio == has_sound and (done.folder / "audio.wav").is_file() == has_sound
        if done.kind == "task":
            assert done.tokens is not None and done.timings["sample_s"] > 0
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["status"] == "ok" and run["order"] == list(frames)
    assert [s["seed"] for s in run["steps"]] == [0] * len(frames)
    assert not list((tmp_path / "run").glob(".*"))  # no temporary folder left behind
    if name == "text_to_audiovisual":
        sound = result.steps["sound"]
        assert sound.audio.shape == (34_000,) and sound.seconds == pytest.approx(2.125)
        assert torch.equal(sound.video, result.steps["clip"].video)  # the clip it scored
        assert probe(sound.folder / "audio.wav").duration == pytest.approx(2.125, abs=0.01)
    if name == "long_video":  # the first clip, then what each round adds
        assert torch.equal(result.steps["extend"].video[:, :17], result.steps["start"].video)
        assert run["steps"][1]["repeat"] == 3 and run["steps"][1]["seconds"] == 53 / 8


# ---------------------------------------------------------------------------- chain, skip, force


def test_chain_order_skip_on_rerun_and_force(tiny_engine, tmp_path, monkeypatch, one_thread):
    calls = spy_generate(tiny_engine, monkeypatch)
    out = tmp_path / "run"
    first = run_recipe("text_to_audiovisual", engine=tiny_engine, out=out)
    # in order, and the second step is given exactly the first one's (saved) clip
    assert [task for task, _ in calls] == ["t2v", "v2a"]
    assert torch.equal(calls[1][1]["video"], first.steps["clip"].video)

    calls.clear()
    again = run_recipe("text_to_audiovisual", engine=tiny_engine, out=out)
    assert calls == [] and all(s.skipped for s in again.steps.values())
    assert torch.equal(again.steps["sound"].audio, first.steps["sound"].audio)
    assert json.loads((out / "run.json").read_text())["steps"][0]["skipped"] is True

    # a changed option re-runs that step only; its input is unchanged
    third = run_recipe(
        "text_to_audiovisual", ["steps.sound.options.seed=7"], engine=tiny_engine, out=out
    )
    assert [task for task, _ in calls] == ["v2a"] and third.steps["clip"].skipped
    assert third.steps["sound"].seed == 7

    calls.clear()
    forced = run_recipe("text_to_audiovisual", engine=tiny_engine, out=out, force=True)
    assert [task for task, _ in calls] == ["t2v", "v2a"]
    assert not any(s.skipped for s in forced.steps.values())
    assert forced.steps["clip"].outputs_sha256 == first.steps["clip"].outputs_sha256  # seeded
    assert json.loads((out / "run.json").read_text())["forced"] is True

    # a changed prompt changes the first step's key, and so the second's input
    calls.clear()
    run_recipe("text_to_audiovisual", ["inputs.prompt=a red box"], engine=tiny_engine, out=out)
    assert [task for task, _ in calls] == ["t2v", "v2a"]


def test_file_inputs_are_hashed_by_content(tiny_engine, in_world, tmp_path, one_thread):
    recipe = {
        "name": "one",
        "steps": {"pic": {"task": "i2v", "inputs": {"image": "frame0.png"}}},
    }
    out = tmp_path / "run"
    image = in_world / "frame0.png"
    before = image.read_bytes()
    try:
        run_recipe(recipe, engine=tiny_engine, out=out)
        assert run_recipe(recipe, engine=tiny_engine, out=out).final.skipped
        from videopoet.data.media import write_png

        write_png(image, torch.full((64, 64, 3), 200, dtype=torch.uint8))
        assert not run_recipe(recipe, engine=tiny_engine, out=out).final.skipped
    finally:
        image.write_bytes(before)


# ---------------------------------------------------------------------------- refiners


class NearestUpsampler:
    """A tiny refiner: nearest-neighbour 2x in space, as a super-resolution stage would."""

    def __init__(self):
        self.calls = []

    def refine(self, engine, video, *, text=None, seed=None, factor=2, progress=True):
        self.calls.append({"text": text, "seed": seed, "factor": factor, "progress": progress})
        return video.repeat_interleave(factor, -1).repeat_interleave(factor, -2)


class RefinerPlugin:
    @videopoet.hookimpl
    def register_refiners(self):
        return [videopoet.RefinerSpec(name="upsample2x", description="nearest 2x")]


@pytest.fixture(scope="module")
def refining_engine(tiny_engine):
    """The tiny bundle's networks with a registry that lists a refiner, and the refiner held."""
    from videopoet.core.engine import Engine
    from videopoet.core.plugins import load_registry

    registry = load_registry(extra_plugins=[("upsample2x", RefinerPlugin())])
    engine = Engine(
        tiny_engine.lm,
        visual=(tiny_engine.visual, tiny_engine.visual_spec),
        audio=(tiny_engine.audio, tiny_engine.audio_spec),
        text_encoder=tiny_engine.text_encoder,
        text_record=tiny_engine.text_record,
        formats=tiny_engine.formats,
        registry=registry,
    )
    engine.refiners["upsample2x"] = NearestUpsampler()
    return engine


def test_refiner_step_takes_the_previous_video(refining_engine, tmp_path, one_thread):
    recipe = {
        "name": "sharper",
        "steps": {
            "clip": {"task": "t2v", "inputs": {"text": "a ball"}},
            "sound": {"task": "v2a", "inputs": {"video": "${steps.clip.video}"}},
            "big": {
                "refiner": "upsample2x",
                "inputs": {"video": "${steps.sound.video}", "text": "a ball"},
                "options": {"factor": 2},
            },
            "again": {"task": "reverse", "inputs": {"video": "${steps.big.video}"}},
        },
    }
    if "reverse" not in refining_engine.registry.tasks:
        del recipe["steps"]["again"]
    result = run_recipe(recipe, engine=refining_engine, out=tmp_path / "run")
    big = result.steps["big"]
    assert big.kind == "refiner" and big.video.shape == (3, 17, 128, 128)
    called = refining_engine.refiners["upsample2x"].calls[-1]
    assert called == {"text": "a ball", "seed": 0, "factor": 2, "progress": False}
    assert torch.equal(big.video[:, :, ::2, ::2], result.steps["clip"].video)
    info = probe(big.folder / "video.mp4")
    assert (info.width, info.height) == (128, 128) and info.has_audio  # the clip's sound kept
    if "again" in result.steps:  # a larger clip is resized to the next task's format
        assert result.steps["again"].video.shape == (3, 17, 64, 64)


def test_refiner_validation(refining_engine, tiny_engine):
    from videopoet.recipes import RecipeError

    def steps(**refine):
        return {
            "name": "r",
            "steps": {
                "clip": {"task": "t2v", "inputs": {"text": "a ball"}},
                "big": {"inputs": {"video": "${steps.clip.video}"}} | refine,
            },
        }

    with pytest.raises(RecipeError) as info:  # unknown option of the refiner
        plan_recipe(steps(refiner="upsample2x", options={"facter": 3}), engine=refining_engine)
    assert info.value.fields == ["steps.big.options.facter"]
    assert "did you mean factor" in str(info.value)
    with pytest.raises(RecipeError) as info:  # not registered
        plan_recipe(steps(refiner="superres_x"), engine=refining_engine)
    assert info.value.fields == ["steps.big.refiner"] and "upsample2x" in str(info.value)
    with pytest.raises(RecipeError) as info:  # registered, but the bundle holds none
        held = refining_engine.refiners.pop("upsample2x")
        try:
            plan_recipe(steps(refiner="upsample2x"), engine=refining_engine)
        finally:
            refining_engine.refiners["upsample2x"] = held
    assert info.value.fields == ["steps.big.refiner"] and "holds none" in str(info.value)


# ---------------------------------------------------------------------------- the CLI


def test_cli_dry_run_run_rerun_and_force(tiny_bundle, tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "pic.yaml"
    recipe.write_text(
        "# videopoet run pic.yaml bundle=DIR\n"
        "description: one picture\n"
        "bundle: ???\n"
        "steps:\n"
        "  pic:\n"
        "    task: t2i\n"
        "    inputs:\n"
        "      text: a cyan triangle\n"
    )
    base = ["run", "pic.yaml", f"bundle={tiny_bundle}"]
    assert cli.main([*base, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "1. pic: task t2i at 1x64x64" in text and "target tokens" in text
    assert cli.main([*base, "--dry-run", "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert planned["steps"][0]["tokens"]["target"] == 66 and planned["steps"][0]["format"]
    assert not (tmp_path / "outputs").exists()  # a dry run writes nothing

    assert cli.main([*base, "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["out"] == "outputs/pic" and not summary["steps"][0]["skipped"]
    assert (tmp_path / "outputs" / "pic" / "pic" / "image.png").is_file()
    assert cli.main([*base, "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"][0]["skipped"]
    assert cli.main([*base, "--quiet", "--force", "--out", "elsewhere"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert not summary["steps"][0]["skipped"] and summary["out"] == "elsewhere"
    assert cli.main([*base, "defaults.seed=null", "--quiet", "--out", "drawn"]) == 0
    drawn = json.loads((tmp_path / "drawn" / "run.json").read_text())["steps"][0]
    assert drawn["options"]["seed"] is None and isinstance(drawn["seed"], int)

    assert cli.main(["run", "pic.yaml", "bundle=nowhere", "--dry-run"]) == 2
    assert "bundle='nowhere'" in capsys.readouterr().err


def test_cli_unknown_recipe_name(capsys):
    assert cli.main(["run", "long_vidoe", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "unknown recipe 'long_vidoe'" in err and "did you mean long_video" in err


@pytest.mark.parametrize(
    "words",
    [
        ["NAME", "--out", "D", "a=1", "--allow", "x", "b=2"],
        ["NAME", "a=1", "--out", "D", "b=2", "--allow", "x"],
        ["--out", "D", "NAME", "a=1", "--allow", "x", "b=2"],
        ["--allow", "x", "NAME", "a=1", "b=2", "--out", "D"],
    ],
)
def test_cli_run_takes_its_options_anywhere_among_the_overrides(words):
    args = cli.build_parser().parse_args(["run", *words, "--dry-run"])
    assert (args.recipe, args.overrides, args.out) == ("NAME", ["a=1", "b=2"], "D")
    assert args.allow == ["x"] and args.dry_run


def test_cli_run_a_recipe_of_stages_with_out_before_the_overrides(capsys, tmp_path):
    argv = ["run", "train-world-tiny", "--out", str(tmp_path / "x"), "inputs.seed=7"]
    assert cli.main([*argv, "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["overrides"] == ["inputs.seed=7"] and plan["steps"][0]["options"]["seed"] == 7


def test_other_commands_with_overrides_take_options_among_them():
    parser = cli.build_parser()
    args = parser.parse_args(["train-refiner", "c.yaml", "--prepare", "train.steps=3", "a=b"])
    assert args.overrides == ["train.steps=3", "a=b"] and args.prepare
    args = parser.parse_args(["add-refiner", "b", "--out", "o", "s1", "s2"])
    assert (args.bundle, args.stages, args.out) == ("b", ["s1", "s2"], "o")
    with pytest.raises(SystemExit):  # an unknown option is still refused
        parser.parse_args(["run", "NAME", "--bogus", "a=1"])


def test_cli_demo_train_with_an_override_for_its_folder(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", "--train", "inputs.seed=1", "--out", "g"]) == 2
    assert "--train-set inputs.seed=1" in capsys.readouterr().err
    args = cli.build_parser().parse_args(["demo", "--train", "--train-set", "a=1", "--quick"])
    assert args.train_set == ["a=1"] and args.quick


# ---------------------------------------------------------------------------- paths


def test_relative_paths_recipe_folder_and_command_line(
    tiny_engine, world_dir, tmp_path, monkeypatch
):
    """A path in a recipe file is relative to the file's folder; one given on the command
    line is relative to the working directory."""
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "frame0.png").write_bytes((world_dir / "frame0.png").read_bytes())
    (folder / "r.yaml").write_text(
        "inputs:\n  image: frame0.png\n"
        "steps:\n  a:\n    task: i2v\n    inputs:\n      image: ${inputs.image}\n"
    )
    monkeypatch.chdir(world_dir)
    planned = plan_recipe(folder / "r.yaml", engine=tiny_engine)
    assert planned.steps[0].inputs["image"].path == folder / "frame0.png"
    planned = plan_recipe(folder / "r.yaml", ["inputs.image=clip.mp4"], engine=tiny_engine)
    assert planned.steps[0].inputs["image"].path == world_dir / "clip.mp4"


# ---------------------------------------------------------------------------- docs


def test_docs_cover_every_builtin_and_their_examples_load(world_dir):
    text = DOCS.read_text()
    for name in BUILTINS:
        assert f"`{name}`" in text, name
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    assert blocks
    import yaml

    for block in blocks:
        loaded = load_recipe(yaml.safe_load(block), ["bundle=b"], base_dir=world_dir)
        assert loaded.recipe.steps
