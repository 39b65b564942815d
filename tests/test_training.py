"""The shared training loop: it learns, checkpoints atomically, keeps N, resumes exactly."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from videopoet.core.errors import ConfigError
from videopoet.core.serialization import load_pretrained
from videopoet.core.training import (
    TrainConfig,
    latest_checkpoint,
    list_checkpoints,
    lr_at,
    prepare_run,
    train,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TRUE_W = torch.tensor([[2.0, -1.0, 0.5]])


def make_batch(step: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    x = torch.randn(16, 3, generator=g)
    return {"x": x, "y": x @ TRUE_W.T + 0.3}


def mse(model, batch):
    err = (model(batch["x"]) - batch["y"]).pow(2).mean()
    return {"loss": err, "mse": err.detach()}


def config(tmp_path, **kw):
    base = dict(
        steps=60, lr=0.05, out_dir=str(tmp_path / "run"), device="cpu", progress=False,
        checkpoint_every=20, keep_checkpoints=2, log_every=5,
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


def model():
    torch.manual_seed(0)
    return torch.nn.Linear(3, 1)


def test_loss_goes_down_and_eval_runs(tmp_path):
    seen = []

    def eval_fn(m):
        seen.append(m.training)
        return {"mse": mse(m, make_batch(10_000))["mse"]}

    net = model()
    before = mse(net, make_batch(10_000))["mse"].item()
    result = train(net, mse, make_batch, config(tmp_path, eval_every=20), eval_fn=eval_fn)
    assert result["step"] == 60 and result["eval"]["mse"] < before / 20
    assert seen == [False, False, False]  # steps 20, 40, 60, always in eval mode
    assert net.training
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval" in r for r in lines) and any("mse" in r for r in lines)


def test_bfloat16_autocast_on_the_cpu_learns_and_keeps_float32_weights(tmp_path):
    """train.dtype=bfloat16: the forward runs in bfloat16 under autocast, the loss is finite and
    falls, and the weights, their gradients and the checkpoint stay float32."""
    seen = []

    def bf16_mse(model, batch):
        out = model(batch["x"])
        seen.append(out.dtype)
        err = (out.float() - batch["y"]).pow(2).mean()
        return {"loss": err, "mse": err.detach()}

    def eval_fn(m):
        return {"mse": mse(m, make_batch(10_000))["mse"]}  # float32: outside autocast

    net = model()
    before = mse(net, make_batch(10_000))["mse"].item()
    cfg = config(tmp_path, dtype="bfloat16", log_every=1, checkpoint_every=60)
    result = train(net, bf16_mse, make_batch, cfg, eval_fn=eval_fn, model_config={"kind": "l"})
    losses = [r["loss"] for r in _records(tmp_path / "run") if "loss" in r]
    print(f"bfloat16: held-out mse {before:.3f} -> {result['eval']['mse']:.4f}; "
          f"train loss {losses[0]:.3f} -> {losses[-1]:.4f}")  # fmt: skip
    assert seen and set(seen) == {torch.bfloat16}  # autocast was on for every step
    assert len(losses) == 60 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] / 20 and result["eval"]["mse"] < before / 20
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in net.parameters())
    state, _ = load_pretrained(latest_checkpoint(tmp_path / "run"))
    assert all(t.dtype == torch.float32 for t in state.values())
    # the weights learnt are the float32 run's, to bfloat16's precision
    plain = model()
    f32 = train(
        plain, mse, make_batch, config(tmp_path / "f32", checkpoint_every=60), eval_fn=eval_fn
    )
    print(f"float32: held-out mse {f32['eval']['mse']:.4f}; weights {plain.weight.tolist()}, "
          f"bfloat16 {net.weight.tolist()}")  # fmt: skip
    torch.testing.assert_close(net.weight, plain.weight, atol=0.05, rtol=0)
    torch.testing.assert_close(net.bias, plain.bias, atol=0.05, rtol=0)


def test_keeps_last_n_checkpoints_and_they_load_as_pretrained(tmp_path):
    net = model()
    train(net, mse, make_batch, config(tmp_path), model_config={"kind": "linear"})
    kept = list_checkpoints(tmp_path / "run")
    assert [p.name for p in kept] == ["step_00000040", "step_00000060"]
    state, cfg = load_pretrained(kept[-1])
    assert cfg == {"kind": "linear"}
    assert torch.equal(state["weight"], net.weight.detach())
    leftovers = [p for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith(".")]
    assert not leftovers


def test_resume_matches_an_uninterrupted_run(tmp_path):
    straight = model()
    train(straight, mse, make_batch, config(tmp_path / "a"))
    # The same run stopped at 20 steps then resumed to 60.
    first = model()
    train(first, mse, make_batch, config(tmp_path / "b", steps=20))
    resumed = model()  # fresh weights: everything must come from the checkpoint
    result = train(resumed, mse, make_batch, config(tmp_path / "b"))
    assert result["resumed_from"] == 20
    assert torch.allclose(resumed.weight, straight.weight, atol=1e-6)
    assert torch.allclose(resumed.bias, straight.bias, atol=1e-6)


def test_resume_false_starts_over(tmp_path):
    train(model(), mse, make_batch, config(tmp_path, steps=20))
    result = train(model(), mse, make_batch, config(tmp_path, steps=20, resume=False))
    assert result["resumed_from"] is None and result["step"] == 20


def test_iterable_batches_and_time_limit(tmp_path):
    def forever():
        step = 0
        while True:
            yield make_batch(step)
            step += 1

    result = train(model(), mse, forever(), config(tmp_path, steps=10**6, time_limit_s=0.2))
    assert 0 < result["step"] < 10**6
    assert latest_checkpoint(tmp_path / "run").name == f"step_{result['step']:08d}"


def test_stop_at_ends_early_on_the_full_schedule_and_resumes_exactly(tmp_path):
    whole = train(model(), mse, make_batch, config(tmp_path / "a", steps=40, schedule="cosine"))
    early = train(
        model(), mse, make_batch, config(tmp_path / "b", steps=40, schedule="cosine", stop_at=25)
    )
    assert early["step"] == 25
    assert latest_checkpoint(tmp_path / "b" / "run").name == "step_00000025"
    # the learning rate at step 25 is the 40-step schedule's, and the rest resumes exactly
    rest = train(model(), mse, make_batch, config(tmp_path / "b", steps=40, schedule="cosine"))
    assert rest["step"] == 40 and rest["resumed_from"] == 25
    from safetensors.torch import load_file

    wa = load_file(latest_checkpoint(tmp_path / "a" / "run") / "model.safetensors")
    wb = load_file(latest_checkpoint(tmp_path / "b" / "run") / "model.safetensors")
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key])
    assert whole["step"] == 40


def test_gradient_accumulation_is_the_step_of_the_whole_batch(tmp_path):
    """Two micro-batches of 8 rows: the weights and logged losses of one batch of 16."""
    whole = model()
    train(whole, mse, make_batch, config(tmp_path / "a", steps=20))
    drawn = []

    def halves(step, micro):
        drawn.append((step, micro))
        batch = make_batch(step)
        return {k: v[8 * micro : 8 * (micro + 1)] for k, v in batch.items()}

    split = model()
    train(split, mse, halves, config(tmp_path / "b", steps=20, grad_accum=2))
    assert drawn[:4] == [(0, 0), (0, 1), (1, 0), (1, 1)] and len(drawn) == 40
    torch.testing.assert_close(split.weight, whole.weight, atol=1e-6, rtol=0)
    torch.testing.assert_close(split.bias, whole.bias, atol=1e-6, rtol=0)

    def logged(run):
        lines = (tmp_path / run / "run" / "metrics.jsonl").read_text().splitlines()
        return [json.loads(x)["mse"] for x in lines if "mse" in json.loads(x)]

    # each micro-batch's mean, averaged: the 16-row mean (equal halves)
    assert logged("b") == pytest.approx(logged("a"), abs=1e-6)
    # a second run on 8-row batches, no accumulation, is another run (the test can fail)
    eight = model()
    train(eight, mse, lambda step: halves(step, 0), config(tmp_path / "c", steps=20))
    assert not torch.allclose(eight.weight, whole.weight, atol=1e-6)


def test_gradient_accumulation_needs_a_micro_batch_index_and_draws_iterables_per_micro(
    tmp_path,
):
    with pytest.raises(ConfigError, match="train.grad_accum"):
        train(model(), mse, make_batch, config(tmp_path / "a", steps=2, grad_accum=2))
    pulled = []

    def stream():
        step = 0
        while True:
            pulled.append(step)
            yield make_batch(step)
            step += 1

    result = train(model(), mse, stream(), config(tmp_path / "b", steps=3, grad_accum=4))
    assert result["step"] == 3 and len(pulled) == 12


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="'loss'"):
        train(model(), lambda m, b: {"mse": mse(m, b)["loss"]}, make_batch, config(tmp_path))
    with pytest.raises(ConfigError, match="device"):
        train(model(), mse, make_batch, config(tmp_path, device="cuda:7"))
    with pytest.raises(ValueError, match="stepz"):
        TrainConfig(stepz=3)


def test_lr_schedule():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(100, cfg) == pytest.approx(0.1)


# ------------------------------------------------------------------------------ reproducibility

ROOT = Path(__file__).resolve().parents[1]


def test_prepare_run_makes_a_fresh_run_a_function_of_its_seed(tmp_path):
    def fresh(name, noise):
        torch.manual_seed(noise)  # whatever ran before must not matter
        cfg = config(tmp_path / name, steps=10, seed=3)
        prepare_run(cfg)
        net = torch.nn.Sequential(
            torch.nn.Linear(3, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1)
        )
        train(net, mse, make_batch, cfg)  # built by a factory that does not seed: dropout too
        return net.state_dict(), _records(tmp_path / name / "run")

    (weights_a, log_a), (weights_b, log_b) = fresh("a", 1), fresh("b", 2)
    assert log_a == log_b
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def _magvit_raw(out_dir, steps=3, **network):
    from videopoet.core.tokenizer_training import load_config

    raw = load_config(ROOT / "configs" / "tokenizer" / "magvit2_tiny.yaml")
    raw["network"].update({"channels": 4, "channel_mult": [1, 1, 2, 2], "mid_blocks": 0, **network})
    raw["data"].update(frames=1, height=16, width=16, eval_clips=1)
    raw["train"].update(
        steps=steps, batch_size=1, log_every=1, progress=False, num_threads=1, device="cpu",
        out_dir=str(out_dir), time_limit_s=None, warmup_steps=0,
    )  # fmt: skip
    return raw


def test_train_tokenizer_fresh_runs_are_identical_and_resume_checks_the_config(tmp_path):
    from safetensors.torch import load_file

    from videopoet.core.tokenizer_training import train_tokenizer

    runs = []
    for name, noise in (("a", 1), ("b", 2)):
        torch.manual_seed(noise)
        result = train_tokenizer(_magvit_raw(tmp_path / name))
        losses = [r["loss"] for r in _records(tmp_path / name) if "loss" in r]
        runs.append((losses, load_file(Path(result["tokenizer_dir"]) / "model.safetensors")))
    (losses_a, weights_a), (losses_b, weights_b) = runs
    assert len(losses_a) == 3 and losses_a == losses_b
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    recorded = json.loads((tmp_path / "a" / "train_config.json").read_text())
    assert recorded["network"]["channels"] == 4 and recorded["train"]["steps"] == 3
    # Resuming with another network fails before anything is built, naming the field.
    with pytest.raises(ConfigError, match=r"network\.channels") as info:
        train_tokenizer(_magvit_raw(tmp_path / "a", steps=4, channels=8))
    assert "was 4, now 8" in str(info.value) and "allow_config_change" in str(info.value)


def test_train_tokenizer_accumulates_gradients_over_micro_batches(tmp_path):
    from videopoet.core.tokenizer_training import train_tokenizer

    raw = _magvit_raw(tmp_path / "acc")
    raw["train"]["grad_accum"] = 2
    result = train_tokenizer(raw)
    assert result["step"] == 3 and len([r for r in _records(tmp_path / "acc") if "loss" in r]) == 3
    recorded = json.loads((tmp_path / "acc" / "train_config.json").read_text())
    assert recorded["train"]["grad_accum"] == 2


def test_decoder_fine_tune_keeps_every_token_id_and_learns_a_second_size(tmp_path):
    from safetensors.torch import load_file

    from videopoet.core.tokenizer_training import train_tokenizer
    from videopoet.data.world import make_batch
    from videopoet.plugins.magvit.model import MagvitTokenizer

    start = Path(train_tokenizer(_magvit_raw(tmp_path / "start"))["tokenizer_dir"])
    raw = _magvit_raw(tmp_path / "ft", steps=4)
    raw["train"]["eval_every"] = 4
    raw.update(init_from=str(start), freeze=["encoder", "quantizer"])
    raw["data"]["sizes"] = [[32, 32]]
    result = train_tokenizer(raw)
    before = load_file(start / "model.safetensors")
    after = load_file(Path(result["tokenizer_dir"]) / "model.safetensors")
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("decoder.") for k in moved)
    old, new = (
        MagvitTokenizer.from_pretrained(start),
        MagvitTokenizer.from_pretrained(result["tokenizer_dir"]),
    )
    for size in (16, 32):  # the ids at both sizes are those of the starting tokenizer
        clips = make_batch([0, 1], 1, size, size)
        assert torch.equal(old.encode(clips), new.encode(clips))
    from videopoet.core.training import TrainConfig
    from videopoet.plugins.magvit.train import MagvitTrainingAdapter

    adapter = MagvitTrainingAdapter(
        new, {**raw["data"], "image_fraction": 0}, raw["loss"], TrainConfig(batch_size=1)
    )
    sizes = [tuple(adapter.batches(step)["video"].shape[-2:]) for step in range(4)]
    assert sizes == [(16, 16), (32, 32), (16, 16), (32, 32)]  # taken in turn
    evaluated = [r["eval"] for r in _records(tmp_path / "ft") if "eval" in r]
    assert evaluated and {"psnr", "psnr_32x32"} <= set(evaluated[-1])
    bad = _magvit_raw(tmp_path / "bad") | {"freeze": ["encoders"]}
    with pytest.raises(ConfigError, match=r"freeze.*encoders.*encoder, quantizer, decoder"):
        train_tokenizer(bad)
    bad = _magvit_raw(tmp_path / "bad2")
    bad["data"]["sizes"] = [[30, 32]]
    with pytest.raises(ConfigError, match=r"data\.sizes\.0"):
        train_tokenizer(bad)


# ------------------------------------------------------------------------------ damaged runs


def _records(run_dir):
    return [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "truncated weights": lambda ckpt: _truncate(ckpt / "model.safetensors"),
    "truncated optimizer": lambda ckpt: _truncate(ckpt / "optimizer.safetensors"),
    "broken state": lambda ckpt: (ckpt / "train_state.json").write_text('{"step": 4'),
    "state without optimizer": lambda ckpt: (ckpt / "train_state.json").write_text('{"step": 40}'),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage, capsys, caplog):
    train(model(), mse, make_batch, config(tmp_path, steps=40))
    newest = tmp_path / "run" / "checkpoints" / "step_00000040"
    DAMAGE[damage](newest)
    capsys.readouterr()
    result = train(model(), mse, make_batch, config(tmp_path))
    assert result["resumed_from"] == 20 and result["step"] == 60
    assert str(newest) in capsys.readouterr().err
    assert any(str(newest) in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_no_intact_checkpoint_starts_over_and_says_so(tmp_path, capsys):
    train(model(), mse, make_batch, config(tmp_path, steps=20))
    _truncate(tmp_path / "run" / "checkpoints" / "step_00000020" / "model.safetensors")
    result = train(model(), mse, make_batch, config(tmp_path, steps=20))
    assert result["resumed_from"] is None and result["step"] == 20
    assert "training starts at step 0" in capsys.readouterr().err


def test_stale_temporary_checkpoint_dirs_are_removed(tmp_path):
    stale = tmp_path / "run" / "checkpoints" / ".step_00000020.k1ll3d.tmp"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    train(model(), mse, make_batch, config(tmp_path, steps=5))
    assert not stale.exists()


def test_metrics_hold_each_step_once_after_a_crash_and_resume(tmp_path):
    def eval_fn(m):
        return {"mse": mse(m, make_batch(10_000))["mse"]}

    def crashing(step):
        if step == 30:  # killed after step 30, ten steps past the checkpoint at 20
            raise RuntimeError("killed")
        return make_batch(step)

    straight = tmp_path / "straight"
    train(model(), mse, make_batch, config(straight, eval_every=10), eval_fn=eval_fn)
    with pytest.raises(RuntimeError, match="killed"):
        train(model(), mse, crashing, config(tmp_path, eval_every=10), eval_fn=eval_fn)
    result = train(model(), mse, make_batch, config(tmp_path, eval_every=10), eval_fn=eval_fn)
    assert result["resumed_from"] == 20
    keys = [(r["step"], "eval" if "eval" in r else "train") for r in _records(tmp_path / "run")]
    assert len(keys) == len(set(keys)) == 12 + 6  # logs at 5, 10 ... 60; evals at 10 ... 60
    resumed = {r["step"]: r["loss"] for r in _records(tmp_path / "run") if "loss" in r}
    expected = {r["step"]: r["loss"] for r in _records(straight / "run") if "loss" in r}
    assert resumed == pytest.approx(expected, rel=1e-6)


# ------------------------------------------------------------------------------ config on resume


def test_resume_with_a_changed_optimisation_config_is_a_config_error(tmp_path):
    train(model(), mse, make_batch, config(tmp_path, steps=20))
    with pytest.raises(ConfigError, match=r"train\.lr") as info:
        train(model(), mse, make_batch, config(tmp_path, lr=0.1))
    message = str(info.value)
    assert "was 0.05, now 0.1" in message
    assert "use a new train.out_dir, or pass train.allow_config_change=true" in message
    with pytest.raises(ConfigError, match=r"train\.batch_size, train\.seed"):
        train(model(), mse, make_batch, config(tmp_path, batch_size=4, seed=1))
    # How long and how it is watched may change: extending a run is normal.
    free = dict(steps=30, log_every=3, eval_every=7, checkpoint_every=10, keep_checkpoints=3)
    assert train(model(), mse, make_batch, config(tmp_path, **free))["resumed_from"] == 20
    # allow_config_change accepts the change, logs it and records it.
    allowed = config(tmp_path, steps=40, lr=0.1, allow_config_change=True)
    assert train(model(), mse, make_batch, allowed)["resumed_from"] == 30
    recorded = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert recorded["train"]["lr"] == 0.1
    change = [r for r in _records(tmp_path / "run") if "config_change" in r]
    assert change == [{"step": 30, "config_change": {"train.lr": [0.05, 0.1]}}]
    assert train(model(), mse, make_batch, config(tmp_path, steps=50, lr=0.1))["step"] == 50


def test_checkpoint_weights_of_another_shape_are_a_config_error(tmp_path):
    train(model(), mse, make_batch, config(tmp_path, steps=20))
    with pytest.raises(ConfigError) as info:
        train(torch.nn.Linear(4, 1), mse, make_batch, config(tmp_path))
    message = str(info.value)
    assert (
        "step_00000020" in message and "weight is (1, 3) there and (1, 4) in the model" in message
    )


# ------------------------------------------------------------------------------ files and results


def test_written_files_follow_the_umask(tmp_path):
    before = os.umask(0o022)
    try:
        train(model(), mse, make_batch, config(tmp_path, steps=20), model_config={"kind": "l"})
    finally:
        os.umask(before)
    run = tmp_path / "run"
    checkpoint = run / "checkpoints" / "step_00000020"
    assert stat.S_IMODE(checkpoint.stat().st_mode) == 0o755
    for path in [*checkpoint.iterdir(), run / "metrics.jsonl", run / "train_config.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_rerunning_a_finished_run_returns_its_stored_metrics(tmp_path, capsys):
    def eval_fn(m):
        return {"mse": mse(m, make_batch(10_000))["mse"]}

    first = train(model(), mse, make_batch, config(tmp_path, steps=20), eval_fn=eval_fn)
    capsys.readouterr()
    again = train(model(), mse, make_batch, config(tmp_path, steps=20), eval_fn=eval_fn)
    assert again["step"] == 20 and again["resumed_from"] == 20
    assert again["metrics"] == first["metrics"] and again["metrics"]
    assert again["eval"] == first["eval"] and again["eval"]
    err = capsys.readouterr().err
    assert "already complete at step 20" in err and "step_00000020" in err


# ------------------------------------------------------------------------------ audio folders


def _write_avi(path, audio: bool):
    import av
    import numpy as np

    with av.open(str(path), "w", format="avi") as out:
        video = out.add_stream("mpeg4", rate=8)
        video.width, video.height, video.pix_fmt = 16, 16, "yuv420p"
        sound = out.add_stream("pcm_s16le", rate=16_000) if audio else None
        if sound is not None:
            sound.layout = "mono"
        for index in range(4):  # 0.5 s
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            frame.pts = index
            out.mux(video.encode(frame))
        out.mux(video.encode())
        if sound is not None:
            samples = (np.sin(np.arange(8000) / 10) * 8000).astype("<i2")[None]
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate, frame.pts = 16_000, 0
            out.mux(sound.encode(frame))
            out.mux(sound.encode())


def test_audio_folder_reads_video_files_and_reports_silent_ones(tmp_path, caplog):
    from videopoet.data.media import write_wav
    from videopoet.plugins.encodec_audio.train import (
        AUDIO_SUFFIXES,
        AudioDataConfig,
        _files,
        load_recordings,
    )

    assert {".avi", ".aac", ".opus", ".aiff", ".wma", ".m4v", ".mpg", ".ts"} <= set(AUDIO_SUFFIXES)
    _write_avi(tmp_path / "talk.avi", audio=True)
    _write_avi(tmp_path / "silent.avi", audio=False)
    write_wav(tmp_path / "tone.wav", torch.zeros(1, 8000))
    (tmp_path / "notes.txt").write_text("not media")
    files = _files(AudioDataConfig(dataset="folder", root=str(tmp_path)))
    assert [p.name for p in files] == ["silent.avi", "talk.avi", "tone.wav"]
    clips, skipped = load_recordings(files, 16_000, progress=False)
    assert [c.shape[-1] for c in clips] == [8000, 8000]
    assert [p for p, _ in skipped] == [str(tmp_path / "silent.avi")]
    assert any("silent.avi" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
