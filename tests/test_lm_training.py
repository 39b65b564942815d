"""LM training: shards, alternating gradient descent, the stage schedule, condition dropout,
exact resume, stale shards, task adaptation (issue 10)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from videopoet.core.errors import ConfigError
from videopoet.core.lm_training import (
    LMTrainingConfig,
    MixtureSampler,
    TokenizeConfig,
    WorldData,
    lm_task_loss,
    tokenize,
    train_lm,
)
from videopoet.data.shards import StaleShardsError, TokenShards, engine_identity

TASKS = ["t2i", "uncond_image", "t2v", "fp", "inpaint", "a2v", "reverse"]


@pytest.fixture(scope="module")
def shards(tiny_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "tiny"
    data = WorldData(examples_per_task=6, eval_examples_per_task=2)
    config = TokenizeConfig(bundle=str(tiny_bundle), out=str(out), tasks=TASKS, world=data)
    tokenize(config, progress=False)
    return out


def _config(tiny_bundle, shards, tmp_path, **train):
    settings = {"steps": 6, "batch_size": 3, "out_dir": str(tmp_path / "run"), "progress": False}
    settings |= {"checkpoint_every": 3, "eval_every": 3, "lr": 3e-3, "num_threads": 1}
    return {"bundle": str(tiny_bundle), "shards": str(shards), "train": settings | train}


def test_shards_hold_every_task_in_groups_of_one_length(shards, tiny_engine):
    data = TokenShards(shards, engine_identity(tiny_engine))
    assert data.tasks() == sorted(TASKS) and data.tasks("eval") == sorted(TASKS)
    for group in data.of("train"):
        tokens = data.arrays(group)["tokens"]
        assert tokens.shape == (group.count, group.length)
        assert (tokens[:, 0] == tiny_engine.vocab.id("<bos>")).all()
    assert sum(g.count for g in data.of("train", "t2v")) == 6
    assert len(data.of("train", "fp")) > 1  # condition frames vary: one group per length


def test_agd_batches_never_mix_task_or_length_and_have_no_padding(shards, tiny_engine):
    data = TokenShards(shards)
    config = LMTrainingConfig(bundle="b", shards=str(shards), train={"batch_size": 4})
    sampler = MixtureSampler(data, config, tiny_engine.registry)
    for step in range(40):
        batch = sampler.batch(step)
        group = next(g for g in data.of("train", batch["task"]) if g.key == batch["group"])
        assert batch["tokens"].shape == (4, group.length)
        assert batch["prefix_length"] == group.prefix_length
        target = batch["tokens"][:, group.prefix_length :]
        assert (target != 0).all(), "a target position holds <pad>"


def test_stage_schedule_mixture_over_many_steps(shards, tiny_engine):
    config = LMTrainingConfig(bundle="b", shards=str(shards), train={"steps": 4000})
    sampler = MixtureSampler(TokenShards(shards), config, tiny_engine.registry)
    image = {"t2i", "uncond_image"}

    def share(steps):
        picks = [sampler.pick_task(random.Random(s), s) for s in steps]
        return sum(p in image for p in picks) / len(picks)

    assert share(range(0, 1000)) == pytest.approx(0.9, abs=0.03)  # first quarter: images
    assert share(range(1000, 4000)) == pytest.approx(0.1, abs=0.03)
    counts = Counter(sampler.pick_task(random.Random(s), s) for s in range(1000, 4000))
    video = [t for t in TASKS if t not in image]
    assert min(counts[t] for t in video) > 0.6 * 2700 / len(video)


def _rate(sampler, task, draws=100):
    rows = draws * sampler.config.train.batch_size
    return sum(sampler.task_batch(task, random.Random(k))["dropped"] for k in range(draws)) / rows


def _group(data, batch):
    return next(g for g in data.of("train", batch["task"]) if g.key == batch["group"])


def test_condition_dropout_rate_and_what_it_drops(shards, tiny_engine):
    data = TokenShards(shards)
    dropout = {"t2v": 0.3, "a2v": 0.5, "inpaint": 0.7, "fp": 1.0}
    config = LMTrainingConfig(
        bundle="b",
        shards=str(shards),
        dropout=dropout,
        default_dropout=0.2,
        train={"batch_size": 8},
    )
    sampler = MixtureSampler(data, config, tiny_engine.registry)
    assert _rate(sampler, "t2v") == pytest.approx(0.3, abs=0.05)
    # a per-task override, not default_dropout, sets the rate; a task without one takes the default
    assert _rate(sampler, "inpaint") == pytest.approx(0.7, abs=0.05)
    assert _rate(sampler, "t2i") == pytest.approx(0.2, abs=0.05)
    batch = sampler.task_batch("t2v", random.Random(3))
    rows = batch["text_mask"].any(1)
    assert (~rows).sum() == batch["dropped"] and batch["dropped"] > 0
    assert (batch["text_embeddings"][~rows] == 0).all()
    # an audio condition is replaced by <pad> and masked as keys (the unconditional branch)
    for k in range(20):
        batch = sampler.task_batch("a2v", random.Random(k))
        if batch["dropped"]:
            break
    hidden = ~batch["key_mask"]
    assert hidden.any() and (batch["tokens"][hidden] == 0).all()
    assert hidden[:, batch["prefix_length"] :].sum() == 0
    # inpainting drops only its text (cfg_drop): the masked-video condition stays, every key seen
    for k in range(40):
        batch = sampler.task_batch("inpaint", random.Random(k))
        if batch["dropped"] and "text_mask" in batch:
            break
    kept = sampler.task_batch("inpaint", random.Random(k), dropout=False)
    assert kept["group"] == batch["group"] and kept["dropped"] == 0
    assert torch.equal(batch["tokens"], kept["tokens"]) and "key_mask" not in batch
    start, stop = _group(data, batch).conditions["visual"]
    assert (batch["tokens"][:, start:stop] != 0).all()
    silent = ~batch["text_mask"].any(1)
    assert silent.sum() == batch["dropped"] and kept["text_mask"].any(1).all()
    assert (batch["text_embeddings"][silent] == 0).all()
    # a task with nothing to drop for guidance (frame prediction) is never dropped, even at 1.0
    assert _rate(sampler, "fp", draws=10) == 0
    assert _rate(sampler, "uncond_image", draws=10) == 0
    # an override of 0 switches a task's dropout off under a positive default
    off = config.model_copy(update={"dropout": {"t2v": 0.0}})
    assert _rate(MixtureSampler(data, off, tiny_engine.registry), "t2v", draws=20) == 0


@pytest.fixture(scope="module")
def v2a_shards(tiny_bundle, tmp_path_factory):
    """Video-to-audio, the task whose guidance drops a visual condition (cfg_drop: visual)."""
    out = tmp_path_factory.mktemp("v2a_shards") / "tiny"
    data = WorldData(examples_per_task=4, eval_examples_per_task=0)
    tokenize(
        TokenizeConfig(bundle=str(tiny_bundle), out=str(out), tasks=["v2a"], world=data),
        progress=False,
    )
    return out


def test_condition_dropout_of_a_visual_condition(v2a_shards, tiny_engine):
    data = TokenShards(v2a_shards)
    assert tiny_engine.registry.task("v2a").cfg_drop == ("visual",)
    config = LMTrainingConfig(
        bundle="b", shards=str(v2a_shards), dropout={"v2a": 0.4}, train={"batch_size": 8}
    )
    sampler = MixtureSampler(data, config, tiny_engine.registry)
    assert _rate(sampler, "v2a") == pytest.approx(0.4, abs=0.05)
    for k in range(20):
        batch = sampler.task_batch("v2a", random.Random(k))
        if 0 < batch["dropped"] < 8:
            break
    kept = sampler.task_batch("v2a", random.Random(k), dropout=False)
    start, stop = _group(data, batch).conditions["visual"]
    dropped = ~batch["key_mask"].all(1)
    assert dropped.sum() == batch["dropped"]
    # a dropped row's video tokens are <pad> and hidden as keys; nothing else changes
    assert (batch["tokens"][dropped, start:stop] == 0).all()
    assert not batch["key_mask"][dropped, start:stop].any()
    outside = torch.ones(batch["tokens"].shape[1], dtype=torch.bool)
    outside[start:stop] = False
    assert batch["key_mask"][:, outside].all()
    assert torch.equal(batch["tokens"][:, outside], kept["tokens"][:, outside])
    assert torch.equal(batch["tokens"][~dropped], kept["tokens"][~dropped])
    assert (kept["tokens"][dropped, start:stop] != 0).all()  # there was a video to drop


def test_bad_mixture_and_dropout_name_the_field(shards, tiny_engine):
    data = TokenShards(shards)
    bad = LMTrainingConfig(bundle="b", shards="s", mixture={"t2x": 1.0})
    with pytest.raises(ConfigError, match="mixture"):
        MixtureSampler(data, bad, tiny_engine.registry)
    bad = LMTrainingConfig(bundle="b", shards="s", dropout={"t2v": 1.5})
    with pytest.raises(ConfigError, match=r"dropout.t2v"):
        MixtureSampler(data, bad, tiny_engine.registry)


def test_a_task_missing_from_the_held_out_split_is_left_out_of_evaluation(shards, tiny_engine):
    class HeldOutWithoutAudio:  # a folder whose held-out videos have no sound: no eval a2v
        def __init__(self, data):
            self.data = data

        def tasks(self, split="train"):
            present = self.data.tasks(split)
            return present if split == "train" else [t for t in present if t != "a2v"]

    data = HeldOutWithoutAudio(TokenShards(shards))
    config = LMTrainingConfig(
        bundle="b", shards="s", mixture={"t2v": 1.0, "a2v": 1.0}, dropout={"a2v": 0.2}
    )
    assert set(MixtureSampler(data, config, tiny_engine.registry).weights) == {"t2v", "a2v"}
    held_out = MixtureSampler(data, config, tiny_engine.registry, "eval")
    assert set(held_out.weights) == {"t2v"}


def test_tokenize_names_a_device_that_is_not_here(tiny_bundle, tmp_path):
    data = WorldData(examples_per_task=1, eval_examples_per_task=1)
    for device, expected in (("tpu", "cpu, cuda"), ("cuda:7", "device that exists|CUDA dev")):
        config = TokenizeConfig(
            bundle=str(tiny_bundle), out=str(tmp_path / "s"), tasks=["t2v"], world=data,
            device=device,
        )  # fmt: skip
        with pytest.raises(ConfigError, match=expected) as info:
            tokenize(config, progress=False)
        assert info.value.args and "device" in str(info.value)
    assert not (tmp_path / "s").exists()


def test_stale_shards_are_refused(shards, tiny_bundle, tmp_path):
    meta = json.loads((shards / "meta.json").read_text())
    copy = tmp_path / "stale"
    import shutil

    shutil.copytree(shards, copy)
    meta["identity"]["visual_tokenizer"]["weights"] = "0" * 16
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StaleShardsError, match="visual_tokenizer"):
        train_lm(_config(tiny_bundle, copy, tmp_path))


def test_training_lowers_the_loss_and_writes_a_loadable_bundle(shards, tiny_bundle, tmp_path):
    from videopoet.core.engine import Engine

    result = train_lm(_config(tiny_bundle, shards, tmp_path, steps=30, eval_every=30))
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if "loss" in x]
    assert losses[-1] < losses[0] - 0.5
    assert any(k.startswith("loss/") for k in lines[0])  # the loss per task is logged
    engine = Engine.from_pretrained(result["bundle"])
    out = engine.generate("t2v", text="a red square moves left on a dark blue background", seed=0)
    assert out.video.shape == (1, 3, 17, 64, 64)
    # a kept checkpoint exports as a bundle (choose the step with the best held-out loss)
    from videopoet.core.lm_training import bundle_from_run

    exported = Engine.from_pretrained(bundle_from_run(tmp_path / "run", tmp_path / "best", 30))
    weights = exported.lm.state_dict()
    for name, value in engine.lm.state_dict().items():
        assert torch.equal(value, weights[name]), name
    with pytest.raises(ConfigError, match="kept checkpoints"):
        bundle_from_run(tmp_path / "run", tmp_path / "nope", 7)
    # every checkpoint, and the run folder (its newest), loads as an Engine bundle as it is
    at_step = Engine.from_pretrained(tmp_path / "run" / "checkpoints" / "step_00000030")
    newest = Engine.from_pretrained(tmp_path / "run")
    for loaded in (at_step, newest):
        assert loaded.generation == engine.generation
        for name, value in loaded.lm.state_dict().items():
            assert torch.equal(value, weights[name]), name
    again = at_step.generate(
        "t2v", text="a red square moves left on a dark blue background", seed=0
    )
    assert torch.equal(again.tokens, out.tokens)
    with pytest.raises(ConfigError, match="bundle"):
        Engine.from_pretrained(tmp_path / "run" / "checkpoints")  # neither


def test_resume_gives_the_losses_and_weights_of_an_uninterrupted_run(
    shards, tiny_bundle, tmp_path, monkeypatch
):
    from safetensors.torch import load_file

    from videopoet.core import lm_training

    whole = train_lm(_config(tiny_bundle, shards, tmp_path / "a", log_every=1))
    real, calls = lm_training.lm_task_loss, []

    def killed_at_step_five(model, batch):
        calls.append(torch.is_grad_enabled())  # evaluation runs without gradients
        if sum(calls) == 5:
            raise KeyboardInterrupt  # as a kill: the last checkpoint is step 3
        return real(model, batch)

    monkeypatch.setattr(lm_training, "lm_task_loss", killed_at_step_five)
    with pytest.raises(KeyboardInterrupt):
        train_lm(_config(tiny_bundle, shards, tmp_path / "b", log_every=1))
    monkeypatch.setattr(lm_training, "lm_task_loss", real)
    resumed = train_lm(_config(tiny_bundle, shards, tmp_path / "b", log_every=1))
    assert resumed["resumed_from"] == 3

    def losses(run):
        lines = (tmp_path / run / "run" / "metrics.jsonl").read_text().splitlines()
        return [(r["step"], r["loss"]) for r in map(json.loads, lines) if "loss" in r]

    assert losses("a") == losses("b") and len(losses("a")) == 6
    a = load_file(str(tmp_path / "a" / "run" / "bundle" / "lm" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "run" / "bundle" / "lm" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert whole["step"] == resumed["step"] == 6


def test_gradient_accumulation_draws_a_group_per_micro_batch(
    shards, tiny_bundle, tiny_engine, tmp_path
):
    config = LMTrainingConfig(bundle="b", shards=str(shards), train={"steps": 40, "grad_accum": 2})
    sampler = MixtureSampler(TokenShards(shards), config, tiny_engine.registry)
    first, second = sampler.batch(7), sampler.batch(7, 1)
    assert torch.equal(sampler.batch(7, 0)["tokens"], first["tokens"])
    assert (first["group"], first["tokens"].tolist()) != (
        second["group"],
        second["tokens"].tolist(),
    )
    tasks = {sampler.batch(s, m)["task"] for s in range(30) for m in range(2)}
    assert len(tasks) > 3  # each micro-batch its own task and group, as AGD wants

    result = train_lm(_config(tiny_bundle, shards, tmp_path / "a", grad_accum=2, log_every=1))
    plain = train_lm(_config(tiny_bundle, shards, tmp_path / "b", log_every=1))
    lines = (tmp_path / "a" / "run" / "metrics.jsonl").read_text().splitlines()
    records = [r for r in map(json.loads, lines) if "loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6] and result["step"] == 6
    # a step's loss is the mean of its micro-batches' losses, each logged under its task
    for record in records:
        per_task = [v for k, v in record.items() if k.startswith("loss/")]
        assert min(per_task) - 1e-6 <= record["loss"] <= max(per_task) + 1e-6
    from safetensors.torch import load_file

    wa = load_file(str(Path(result["bundle"]) / "lm" / "model.safetensors"))
    wb = load_file(str(Path(plain["bundle"]) / "lm" / "model.safetensors"))
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)  # twice the rows per step


def test_task_adaptation_on_the_example_plugins_task(shards, tiny_bundle, tiny_engine, tmp_path):
    """Adapting on the example plugin's ``reverse`` lowers its held-out loss below the starting
    bundle's, and the adapted bundle generates it (a video in, the video out)."""
    from videopoet.core.engine import Engine
    from videopoet.data.world import make_batch

    config = _config(tiny_bundle, shards, tmp_path, steps=12, eval_every=4, checkpoint_every=12)
    config["mixture"] = {"reverse": 1.0}
    config["train"]["lr"] = 1e-3  # 3e-3 overshoots the held-out loss on the first steps
    result = train_lm(config)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines]
    trained = [r for r in records if "loss" in r]
    evals = [(r["step"], r["eval"]) for r in records if "eval" in r]
    assert trained and all(
        {k for k in r if k.startswith("loss/")} == {"loss/reverse"} for r in trained
    )
    assert [step for step, _ in evals] == [4, 8, 12]
    assert all(set(e) == {"loss", "loss/reverse"} for _, e in evals)  # only the adapted task

    # the starting bundle's held-out loss, as the trainer's eval computes it
    parsed = LMTrainingConfig(**config)
    held_out = MixtureSampler(TokenShards(shards), parsed, tiny_engine.registry, "eval")

    def held_out_loss(engine):
        batch = held_out.task_batch("reverse", random.Random("eval/reverse/0"), dropout=False)
        with torch.no_grad():
            return float(lm_task_loss(engine.lm.eval(), batch)["loss"])

    start = held_out_loss(tiny_engine)
    adapted = Engine.from_pretrained(result["bundle"])
    last = evals[-1][1]["loss/reverse"]
    assert held_out_loss(adapted) == pytest.approx(last, rel=1e-5)  # the same measure
    shown = [round(e["loss/reverse"], 3) for _, e in evals]
    print(f"held-out loss/reverse: start {start:.3f}, evals {shown}")
    assert all(e["loss/reverse"] < start for _, e in evals)
    assert last < start - 0.5

    clip = make_batch([5], 17, 64, 64)[0]  # a world clip, (3, T, H, W) in [-1, 1]
    out = adapted.generate("reverse", video=clip, seed=0)
    assert out.task == "reverse" and out.video.shape == (1, 3, 17, 64, 64)
    assert torch.isfinite(out.video).all() and out.video.abs().max() <= 1

    again = train_lm(
        {
            **_config(tiny_bundle, shards, tmp_path / "second", steps=2),
            "bundle": result["bundle"],
            "mixture": {"reverse": 1.0},
        }
    )
    assert again["step"] == 2 and again["resumed_from"] is None


@pytest.mark.parametrize(
    "name,schema",
    [
        ("tiny.yaml", LMTrainingConfig),
        ("paper.yaml", LMTrainingConfig),
        ("tiny_tokenize.yaml", TokenizeConfig),
    ],
)
def test_committed_configs_validate(name, schema):
    from pathlib import Path

    from videopoet.core.tokenizer_training import load_config, validate_section

    path = Path(__file__).resolve().parents[1] / "configs" / "lm" / name
    validate_section(schema, load_config(path), "")


def test_a_typo_in_a_nested_section_lists_that_sections_fields():
    from videopoet.core.lm_training import TokenizeConfig
    from videopoet.core.tokenizer_training import validate_section

    with pytest.raises(ConfigError, match=r"world\.seedd.*one of seed, .*did you mean seed"):
        validate_section(TokenizeConfig, {"bundle": "b", "out": "o", "world": {"seedd": 1}}, "")
    with pytest.raises(ConfigError, match=r"train\.stepz.*did you mean steps"):
        validate_section(
            LMTrainingConfig, {"bundle": "b", "shards": "s", "train": {"stepz": 3}}, ""
        )


def test_shards_carry_each_layouts_grid_and_a_grid_lm_trains_on_them(shards, tmp_path):
    from videopoet.cli_generate import TINY_AUDIO, TINY_VISUAL
    from videopoet.core.engine import Engine

    bundle = tmp_path / "grid_bundle"
    engine = Engine.create(
        preset="tiny", visual_dir=TINY_VISUAL, audio_dir=TINY_AUDIO, grid_positions=True
    )
    engine.save_pretrained(bundle)
    data = TokenShards(shards, engine_identity(engine))  # the same shards serve both LMs
    a2v = data.of("train", "a2v")[0]
    layout = engine.layout(engine.registry.task("a2v"), engine.formats[0])
    assert torch.equal(a2v.grid_tensor(), layout.grid_tensor())
    batch = MixtureSampler(data, LMTrainingConfig(bundle="b", shards=str(shards)), engine.registry)
    drawn = batch.batch(0)
    assert drawn["grid"].shape == (*drawn["tokens"].shape, 3)

    result = train_lm(_config(bundle, shards, tmp_path, steps=30, eval_every=30))
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if "loss" in x]
    assert losses[-1] < losses[0] - 0.5
    trained = Engine.from_pretrained(result["bundle"])
    assert trained.lm.config.grid_positions
    out = trained.generate("a2v", audio=torch.zeros(34_000), seed=0)
    assert out.video.shape == (1, 3, 17, 64, 64)

    # shards written before grid positions are refused for a grid LM, with what to do
    import shutil

    old = tmp_path / "old_shards"
    shutil.copytree(shards, old)
    meta = json.loads((old / "meta.json").read_text())
    for group in meta["groups"]:
        group.pop("grid")
    (old / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StaleShardsError, match="tokenize again"):
        train_lm(_config(bundle, old, tmp_path / "again"))


def test_a_mapping_override_replaces_its_section_and_a_dotted_one_changes_one_field():
    from videopoet.core.tokenizer_training import load_config

    path = Path(__file__).resolve().parents[1] / "configs" / "lm" / "tiny.yaml"
    config = load_config(path, ["mixture={a2v: 1, v2a: 2}", "train.steps=5"])
    assert config["mixture"] == {"a2v": 1, "v2a": 2}  # merged, every config task would stay
    assert config["train"]["steps"] == 5 and config["train"]["lr"] == 0.003
    assert load_config(path, ["mixture=null"])["mixture"] is None
    nested = load_config(path, ["stages={first_fraction: 0.5}"])["stages"]
    assert nested == {"first_fraction": 0.5}


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory, save_tiny_t5):
    """A tiny randomly initialised local T5 encoder (width 32), saved as a user's T5 is."""
    words = ["<pad>", "</s>", "<unk>", "a", "red", "square", "moves", "left"]
    return save_tiny_t5(tmp_path_factory.mktemp("t5"), words)


@pytest.mark.parametrize("name,width", [("minilm", 384), ("hash", 64), ("t5", 32)])
def test_the_text_projection_is_sized_from_the_bundles_text_encoder(
    name, width, t5_folder, tmp_path
):
    """The LM's text_dim is the width of the encoder the bundle names (not a fixed 384), and
    it survives the bundle round trip the trainer starts from."""
    from videopoet.cli_generate import TINY_VISUAL
    from videopoet.core.engine import Engine

    options = {"path": str(t5_folder)} if name == "t5" else None
    engine = Engine.create(
        preset="tiny", visual_dir=TINY_VISUAL, text_encoder=name, text_options=options
    )
    assert engine.text_encoder.dim == width
    assert engine.lm.config.text_dim == engine.text_encoder.dim
    assert tuple(engine.lm.text_proj.weight.shape) == (width, engine.lm.config.d_model)
    embedded = engine.text_encoder.encode(["a red square moves left"]).embeddings
    assert embedded.shape[-1] == engine.lm.config.text_dim  # what the LM is fed fits
    engine.save_pretrained(tmp_path / "bundle")
    loaded = Engine.from_pretrained(tmp_path / "bundle")
    assert loaded.lm.config.text_dim == loaded.text_encoder.dim == width
