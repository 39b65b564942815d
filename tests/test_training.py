"""The shared training loop: it learns, checkpoints atomically, keeps N, resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch

from videopoet.core.errors import ConfigError
from videopoet.core.serialization import load_pretrained
from videopoet.core.training import (
    TrainConfig,
    latest_checkpoint,
    list_checkpoints,
    lr_at,
    train,
)

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
