"""A bundle's sampling defaults (bundle.json ``generation``): validation, the round trip,
resolution in Engine.generate (explicit beats default, per-task overrides, cfg only where a
condition can be dropped), and every writer and reader of bundles keeping and using them."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch

from videopoet import cli
from videopoet.core import generation as sampler
from videopoet.core.bundle import BUNDLE_NAME, read_bundle_config
from videopoet.core.engine import Engine
from videopoet.core.errors import ConfigError
from videopoet.core.generation_config import (
    GenerationDefaults,
    apply_overrides,
    describe_sampling,
    parse_generation,
)

OFF = {"cfg_scale": 1.0, "temperature": 1.0, "top_k": None, "top_p": None}
GUIDED = {"cfg_scale": 3.0, "tasks": {"t2i": {"temperature": 0.5, "top_k": 8}}}


def _cli(*argv: str) -> tuple[int, str]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = cli.main(list(argv))
    return code, buffer.getvalue()


def _bundle_json(path) -> dict:
    return json.loads((Path(path) / BUNDLE_NAME).read_text())


@pytest.fixture
def calls(monkeypatch):
    """Every call of the LM sampler: (the model, the task, its four sampling settings)."""
    seen: list[tuple] = []
    real = sampler.generate

    def spy(model, layout, *args, **kwargs):
        keys = ("cfg_scale", "temperature", "top_k", "top_p")
        seen.append((model, layout.task.name, {k: kwargs[k] for k in keys}))
        return real(model, layout, *args, **kwargs)

    monkeypatch.setattr(sampler, "generate", spy)
    return seen


@pytest.fixture(scope="module")
def guided_bundle(tiny_bundle, tmp_path_factory):
    """The tiny bundle with cfg_scale 3 and a t2i override."""
    engine = Engine.from_pretrained(tiny_bundle)
    engine.generation = GUIDED
    return engine.save_pretrained(tmp_path_factory.mktemp("guided") / "bundle")


@pytest.fixture(scope="module")
def guided(guided_bundle, one_thread):
    return Engine.from_pretrained(guided_bundle)


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "raw,field",
    [
        ({"cfg_scale": -1}, "generation.cfg_scale"),
        ({"temperature": float("nan")}, "generation.temperature"),
        ({"top_k": 0}, "generation.top_k"),
        ({"top_p": 1.5}, "generation.top_p"),
        ({"cfgscale": 3}, "generation.cfgscale"),
        ({"tasks": {"t2v": {"temprature": 1}}}, "generation.tasks.t2v.temprature"),
        ({"tasks": {"t2v": {"cfg_scale": None}}}, "generation.tasks.t2v.cfg_scale"),
    ],
)
def test_bad_values_name_the_field(raw, field):
    with pytest.raises(ConfigError) as info:
        parse_generation(raw)
    assert info.value.field == field
    if "cfgscale" in field:
        assert "cfg_scale" in info.value.expected  # the keys it takes are listed


def test_tasks_are_checked_against_the_registry(tiny_engine):
    with pytest.raises(ConfigError, match="generation.tasks.*t2vv.*t2v"):
        Engine(tiny_engine.lm, registry=tiny_engine.registry, generation={"tasks": {"t2vv": {}}})
    with pytest.raises(ConfigError, match="generation.tasks.fp.cfg_scale.*no condition"):
        Engine(
            tiny_engine.lm,
            registry=tiny_engine.registry,
            generation={"tasks": {"fp": {"cfg_scale": 2}}},
        )


def test_overrides_syntax():
    made = apply_overrides(None, ["cfg_scale=3", "t2v.temperature=0.8", "tasks.fp.top_k=null"])
    assert made.cfg_scale == 3.0 and made.for_task("t2v")["temperature"] == 0.8
    assert made.model_dump(mode="json")["tasks"] == {
        "t2v": {"temperature": 0.8},
        "fp": {"top_k": None},
    }
    assert apply_overrides(made, ["temperature=0"]).for_task("fp")["temperature"] == 0.0
    assert apply_overrides(None, []) is None and apply_overrides(made, None) is made
    for item, field in [
        ("cfg_scale", "generation"),
        ("cfg=3", "generation.cfg"),
        ("a.b.c=1", "generation"),
        ("top_p=high", "generation.top_p"),
    ]:
        with pytest.raises(ConfigError) as info:
            apply_overrides(None, [item])
        assert info.value.field == field, item


def test_a_hand_edited_section_is_refused_naming_the_file(guided_bundle, tmp_path):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(guided_bundle, copy)
    data = _bundle_json(copy)
    data["generation"]["top_p"] = 0
    (copy / BUNDLE_NAME).write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"bundle.json: generation.top_p"):
        read_bundle_config(copy)


# ---------------------------------------------------------------------------- the bundle


def test_round_trip_keeps_per_task_overrides_partial(guided_bundle, guided):
    section = _bundle_json(guided_bundle)["generation"]
    assert section == {"cfg_scale": 3.0, "temperature": 1.0, "top_k": None, "top_p": None} | {
        "tasks": {"t2i": {"temperature": 0.5, "top_k": 8}}
    }
    assert guided.generation == parse_generation(GUIDED)
    # only what the task gives replaces the bundle-level values
    assert guided.sampling_for("t2i") == {"cfg_scale": 3.0, "temperature": 0.5, "top_k": 8} | {
        "top_p": None
    }
    assert guided.sampling_for("t2v") == OFF | {"cfg_scale": 3.0}


def test_no_section_samples_as_before(tiny_bundle, tiny_engine, calls):
    assert "generation" not in _bundle_json(tiny_bundle)  # an old reader still reads it
    assert tiny_engine.generation is None
    assert tiny_engine.sampling_for("t2i") == OFF
    plain = tiny_engine.generate("t2i", text="a red square", seed=1)
    explicit = tiny_engine.generate(
        "t2i", text="a red square", seed=1, cfg_scale=1.0, temperature=1.0
    )
    assert torch.equal(plain.tokens, explicit.tokens) and plain.sampling == OFF
    assert calls[0][2] == OFF


# ---------------------------------------------------------------------------- resolution


def test_explicit_values_beat_the_defaults(guided, calls):
    result = guided.generate("t2i", text="a red square", seed=0)
    assert result.sampling == {"cfg_scale": 3.0, "temperature": 0.5, "top_k": 8, "top_p": None}
    assert calls[-1][2] == result.sampling
    given = guided.generate(
        "t2i", text="a red square", seed=0, cfg_scale=1.0, temperature=0, top_k=0, top_p=0.9
    )
    assert given.sampling == {"cfg_scale": 1.0, "temperature": 0, "top_k": None, "top_p": 0.9}
    assert calls[-1][2] == given.sampling  # top_k=0: off, whatever the bundle says


def test_cfg_default_skips_tasks_with_nothing_to_drop(guided, calls):
    result = guided.generate("uncond_image", seed=0)  # no condition: guidance cannot apply
    assert result.sampling["cfg_scale"] == 1.0 and calls[-1][2]["cfg_scale"] == 1.0
    assert guided.sampling_for("fp")["cfg_scale"] == 1.0
    with pytest.raises(ConfigError, match="cfg_scale.*no condition to drop"):
        guided.generate("uncond_image", seed=0, cfg_scale=3.0)
    with pytest.raises(ConfigError, match="temperature"):
        guided.sampling_for("t2i", temperature=-1)


def test_cfg_default_skips_a_call_without_the_droppable_condition(guided, calls):
    """inpaint declares ``text`` as its condition to drop; without a prompt there is nothing
    to guide, so the bundle's cfg 3 gives way to 1 while an explicit 3 is still an error."""
    fmt = guided.pick_format(guided.registry.task("inpaint"), None)
    video = torch.zeros(3, fmt.frames, fmt.height, fmt.width)
    mask = torch.zeros(fmt.frames, fmt.height, fmt.width, dtype=torch.bool)
    mask[:, : fmt.height // 2] = True
    result = guided.generate("inpaint", video=video, mask=mask, seed=0)
    assert result.sampling["cfg_scale"] == 1.0 and calls[-1][2]["cfg_scale"] == 1.0
    guided.generate("inpaint", video=video, mask=mask, text="a red ball", seed=0)
    assert calls[-1][2]["cfg_scale"] == 3.0  # with a prompt, the default guides it
    with pytest.raises(ConfigError, match="cfg_scale.*no condition to drop"):
        guided.generate("inpaint", video=video, mask=mask, seed=0, cfg_scale=3.0)


def test_describe_groups_tasks_with_the_same_settings(guided):
    text = describe_sampling({t: guided.sampling_for(t) for t in ("t2v", "i2v", "fp")})
    assert text == "cfg_scale 3, temperature 1 (t2v, i2v); cfg_scale 1, temperature 1 (fp)"


# ---------------------------------------------------------------------------- writers


def test_init_and_generate_cli(tmp_path):
    bundle = tmp_path / "bundle"
    code, text = _cli("init", str(bundle), "--generation", "cfg_scale=2.5", "t2i.temperature=0")
    assert code == 0
    assert json.loads(text)["generation"]["cfg_scale"] == 2.5
    assert _bundle_json(bundle)["generation"]["tasks"] == {"t2i": {"temperature": 0.0}}
    argv = ["generate", "t2i", "--checkpoint", str(bundle), "--text", "a red square", "--quiet"]
    code, text = _cli(*argv, "--out", str(tmp_path / "out"), "--seed", "0")
    assert code == 0
    assert json.loads(text.splitlines()[-1])["sampling"] == {
        "cfg_scale": 2.5,
        "temperature": 0.0,
        "top_k": None,
        "top_p": None,
    }
    code, text = _cli(*argv, "--out", str(tmp_path / "out"), "--cfg-scale", "1")
    assert code == 0 and json.loads(text.splitlines()[-1])["sampling"]["cfg_scale"] == 1.0
    assert _cli("init", str(tmp_path / "bad"), "--generation", "cfg=3")[0] == 2
    assert not (tmp_path / "bad").exists()


def test_add_refiner_keeps_the_section(guided_bundle, guided, tmp_path):
    from videopoet.plugins.superres.config import StageConfig
    from videopoet.plugins.superres.refiner import SuperResolution, tokenizer_fingerprint

    stage = StageConfig(
        grid=(5, 16, 16),
        windows={"vertical": (1, 16, 2), "horizontal": (1, 2, 16), "temporal": (5, 4, 4)},
        codebook_bits=guided.visual_spec.codebook_bits,
        width=16,
        heads=2,
        blocks=1,
        text_dim=guided.text_encoder.dim,
        steps=2,
        tokenizer=guided.visual_spec.name,
        tokenizer_identity=tokenizer_fingerprint(guided.visual),
        text_encoder=guided.text_record,
    )
    SuperResolution([stage]).save_pretrained(tmp_path / "refiner")
    out = tmp_path / "with_sr"
    code, _ = _cli("add-refiner", str(guided_bundle), str(tmp_path / "refiner"), "--out", str(out))
    assert code == 0
    assert _bundle_json(out)["generation"] == _bundle_json(guided_bundle)["generation"]
    assert _bundle_json(out)["refiners"] == ["superres"]


@pytest.fixture(scope="module")
def t2i_shards(tiny_bundle, tmp_path_factory):
    from videopoet.core.lm_training import TokenizeConfig, WorldData, tokenize

    out = tmp_path_factory.mktemp("shards") / "t2i"
    data = WorldData(examples_per_task=2, eval_examples_per_task=1)
    tokenize(
        TokenizeConfig(bundle=str(tiny_bundle), out=str(out), tasks=["t2i"], world=data), False
    )
    return out


def test_trainer_and_export_write_the_section(guided_bundle, t2i_shards, tmp_path, one_thread):
    from videopoet.core.lm_training import bundle_from_run, train_lm

    train = {"steps": 2, "batch_size": 1, "out_dir": str(tmp_path / "run"), "progress": False}
    train |= {"checkpoint_every": 1, "eval_every": 0, "num_threads": 1}
    config = {"bundle": str(guided_bundle), "shards": str(t2i_shards), "train": train}
    # no section in the config: the starting bundle's is kept
    result = train_lm(config)
    assert _bundle_json(result["bundle"])["generation"] == _bundle_json(guided_bundle)["generation"]
    # a section in the config replaces it; a resumed run may change it (it learns nothing else)
    result = train_lm(config | {"generation": {"cfg_scale": 2.0, "top_p": 0.9}})
    written = Engine.from_pretrained(result["bundle"]).generation
    assert written == GenerationDefaults(cfg_scale=2.0, top_p=0.9)
    assert result["step"] == 2
    # export: the run's section, with --generation items over it
    exported = bundle_from_run(tmp_path / "run", tmp_path / "exported", 1)
    assert Engine.from_pretrained(exported).generation == written
    code, text = _cli(
        "export",
        str(tmp_path / "run"),
        "--out",
        str(tmp_path / "exported2"),
        "--generation",
        "temperature=0.7",
        "fp.top_k=4",
    )
    assert code == 0
    section = _bundle_json(tmp_path / "exported2")["generation"]
    assert section["cfg_scale"] == 2.0 and section["temperature"] == 0.7
    assert section["tasks"] == {"fp": {"top_k": 4}}
    with pytest.raises(ConfigError, match="generation.tasks"):
        train_lm(config | {"generation": {"tasks": {"nope": {}}}})


# ---------------------------------------------------------------------------- readers


@pytest.fixture(scope="module")
def small_guided(tmp_path_factory):
    """An untrained tiny bundle serving 9x32x32 with cfg_scale 3 and temperature 0.9."""
    from videopoet.cli_generate import TINY_AUDIO, TINY_VISUAL

    engine = Engine.create(
        preset="tiny",
        visual_dir=TINY_VISUAL,
        audio_dir=TINY_AUDIO,
        formats=["9x32x32", "1x32x32"],
        generation={"cfg_scale": 3.0, "temperature": 0.9},
    )
    return engine.save_pretrained(tmp_path_factory.mktemp("small") / "bundle")


def test_evaluate_samples_both_models_with_the_bundles_settings(small_guided, calls, one_thread):
    argv = ["evaluate", str(small_guided), "--seeds", "1", "--tasks", "t2v,fp,inpaint", "--quiet"]
    code, text = _cli(*argv, "--json")
    assert code == 0
    record = json.loads(text.strip().splitlines()[-1])
    guided = {"cfg_scale": 3.0, "temperature": 0.9, "top_k": None, "top_p": None}
    unguided = guided | {"cfg_scale": 1.0}  # fp: nothing to drop; inpaint: no prompt given
    assert record["sampling"] == {"t2v": guided, "fp": unguided, "inpaint": unguided}
    assert record["skipped"] == {}
    models = {id(model) for model, _, _ in calls}
    assert len(models) == 2  # the bundle and its untrained twin, with the same settings
    for model in models:
        used = {task: s for m, task, s in calls if id(m) == model}
        assert used == record["sampling"]
    # explicit options win, a cfg_scale only where guidance applies; the table says so
    calls.clear()
    code, text = _cli(*argv, "--cfg-scale", "2")
    assert code == 0
    assert "sampling (bundle and untrained): cfg_scale 2, temperature 0.9 (t2v); " in text
    assert {task: s["cfg_scale"] for _, task, s in calls} == {"t2v": 2.0, "fp": 1.0, "inpaint": 1.0}


def test_the_untrained_twin_inherits_the_section(guided):
    from videopoet.data.evaluation import untrained_engine

    twin = untrained_engine(guided)
    assert twin.generation == guided.generation
    assert twin.sampling_for("t2i") == guided.sampling_for("t2i")


def test_recipe_steps_take_the_bundles_defaults(guided, tmp_path):
    from videopoet.recipes import plan_recipe, run_recipe

    recipe = {
        "name": "one",
        "steps": {
            "image": {"task": "t2i", "inputs": {"text": "a red square"}},
            "cold": {"task": "t2i", "inputs": {"text": "a red square"}, "options": {"top_k": 0}},
        },
    }
    planned = plan_recipe(recipe, engine=guided)
    assert planned.step("image").sampling == guided.sampling_for("t2i")
    assert "sampling: cfg_scale 3, temperature 0.5, top_k 8" in planned.text()
    result = run_recipe(recipe, engine=guided, out=tmp_path / "run")
    assert result.steps["image"].sampling == guided.sampling_for("t2i")
    assert result.steps["cold"].sampling == guided.sampling_for("t2i") | {"top_k": None}
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["steps"][0]["sampling"]["cfg_scale"] == 3.0


def test_demo_gives_cfg_only_to_tasks_it_can_guide(guided):
    from videopoet.demo.cases import Context

    ctx = Context(None, None, None, {"cfg_scale": 2.0, "temperature": None, "top_k": 5})
    assert ctx.options(guided, "t2v") == {"cfg_scale": 2.0, "top_k": 5}
    assert ctx.options(guided, "fp") == {"top_k": 5}


def test_demo_drops_a_given_cfg_where_the_call_has_nothing_to_drop(guided, calls):
    from videopoet.demo.cases import Context, _generate

    fmt = guided.pick_format(guided.registry.task("inpaint"), None)
    ctx = Context(fmt, fmt, None, {"cfg_scale": 2.0})
    video = torch.zeros(3, fmt.frames, fmt.height, fmt.width)
    mask = torch.zeros(fmt.frames, fmt.height, fmt.width, dtype=torch.bool)
    mask[:, : fmt.height // 2] = True
    _generate(guided, "inpaint", 0, ctx, None, video=video, mask=mask)  # no prompt: no error
    assert calls[-1][2]["cfg_scale"] == 1.0
    _generate(guided, "inpaint", 0, ctx, None, video=video, mask=mask, text="a red ball")
    assert calls[-1][2]["cfg_scale"] == 2.0
