"""The super-resolution transformer: windows, locality, factorization, sampling, configs."""

from __future__ import annotations

import itertools

import pytest
import torch
from pydantic import ValidationError

from videopoet.core.errors import ConfigError
from videopoet.plugins.superres.config import (
    AXES,
    PAPER_STAGES,
    StageConfig,
    effective_window,
    lr_window,
)
from videopoet.plugins.superres.model import (
    Factorization,
    Layer,
    SuperResTransformer,
    joint_log_probs,
)
from videopoet.plugins.superres.sampling import mask_schedule, sample_tokens
from videopoet.plugins.superres.windows import merge, partition, window_index

TINY_WINDOWS = {"vertical": (1, 16, 2), "horizontal": (1, 2, 16), "temporal": (5, 4, 4)}


def tiny_config(**overrides) -> StageConfig:
    values = {
        "grid": (5, 16, 16),
        "windows": TINY_WINDOWS,
        "codebook_bits": 10,
        "width": 16,
        "heads": 2,
        "blocks": 1,
        "text_dim": 8,
        **overrides,
    }
    return StageConfig(**values)


def _coordinates(grid: tuple[int, int, int]) -> torch.Tensor:
    """(1, T, H, W, 3): each position's own (t, h, w)."""
    axes = [torch.arange(g) for g in grid]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)[None].float()


GRIDS = [
    ((5, 16, 16), TINY_WINDOWS),
    ((5, 56, 32), PAPER_STAGES["paper_stage1"]["windows"]),
    ((5, 112, 64), PAPER_STAGES["paper_stage2"]["windows"]),
]


@pytest.mark.parametrize(("grid", "windows"), GRIDS, ids=["tiny", "stage1", "stage2"])
@pytest.mark.parametrize("axis", AXES)
def test_partition_merge_round_trip_and_window_contents(grid, windows, axis):
    window = windows[axis]
    coords = _coordinates(grid)
    rows = partition(coords, window)
    count = (grid[0] // window[0]) * (grid[1] // window[1]) * (grid[2] // window[2])
    assert rows.shape == (count, window[0] * window[1] * window[2], 3)
    assert torch.equal(merge(rows, grid, window), coords)
    # every row holds exactly one window: its positions share t // wt, h // wh, w // ww
    blocks = rows // torch.tensor(window).float()
    assert torch.equal(blocks, blocks[:, :1].expand_as(blocks))
    # the row index agrees with window_index
    index = window_index(grid, window)
    first = rows[:, 0].long()
    assert torch.equal(index[first[:, 0], first[:, 1], first[:, 2]], torch.arange(count))


@pytest.mark.parametrize(("grid", "windows"), GRIDS, ids=["tiny", "stage1", "stage2"])
def test_low_resolution_windows_cover_the_same_region(grid, windows):
    lr_grid = (grid[0], grid[1] // 2, grid[2] // 2)
    for axis in AXES:
        window = windows[axis]
        hr = partition(_coordinates(grid), window)
        lr = partition(_coordinates(lr_grid), lr_window(window, 2))
        assert hr.shape[0] == lr.shape[0]
        hr_region = hr.clone()
        hr_region[..., 1:] = hr_region[..., 1:].div(2).floor()
        for row in range(0, hr.shape[0], max(1, hr.shape[0] // 7)):  # a spread of windows
            assert {tuple(p) for p in hr_region[row].tolist()} == {
                tuple(p) for p in lr[row].tolist()
            }


@pytest.mark.parametrize("axis", AXES)
def test_attention_never_crosses_a_window(axis, one_thread):
    torch.manual_seed(0)
    config = tiny_config()
    layer = Layer(config).eval()
    grid, lr_grid = config.grid, config.lr_grid
    window = config.windows.items()[AXES.index(axis)][1]
    low = lr_window(window, config.scale)
    x = torch.randn(1, *grid, config.width)
    lr = torch.randn(1, *lr_grid, config.width)
    text = torch.randn(1, 3, config.width)
    mask = torch.ones(1, 3, dtype=torch.bool)
    base = layer(x, lr, text, mask, window, low)
    hr_windows = window_index(grid, window)
    lr_windows = window_index(lr_grid, low)
    for t, h, w in [(0, 0, 0), (2, 7, 9), (4, 15, 15)]:
        poked = x.clone()
        poked[0, t, h, w] += 3.0 * torch.randn(config.width)  # not a constant: LayerNorm
        changed = (layer(poked, lr, text, mask, window, low) - base).abs().amax(-1)[0] > 1e-6
        assert torch.equal(changed, hr_windows == hr_windows[t, h, w]), (axis, t, h, w)
        poked_lr = lr.clone()
        poked_lr[0, t, h // 2, w // 2] += 3.0 * torch.randn(config.width)
        changed = (layer(x, poked_lr, text, mask, window, low) - base).abs().amax(-1)[0] > 1e-6
        region = lr_windows[t, h // 2, w // 2]
        assert torch.equal(changed, hr_windows == region), ("lr", axis, t, h, w)


def test_factorized_heads_reproduce_the_full_id():
    for bits, groups in [(10, 2), (9, 2), (18, 2), (10, 3), (6, 1)]:
        fact = Factorization(bits, groups)
        assert sum(fact.group_bits) == bits
        ids = torch.arange(2**bits) if bits <= 12 else torch.randint(2**bits, (4096,))
        values = fact.split(ids)
        assert all((values[:, g] < n).all() for g, n in enumerate(fact.sizes))
        assert torch.equal(fact.merge(values), ids)
    assert Factorization(18, 2).group_bits == [9, 9]  # the paper's 2^18 = 512 x 512
    fact = Factorization(10, 2)
    torch.manual_seed(0)
    logits = [torch.randn(7, n) for n in fact.sizes]
    joint = joint_log_probs(logits, fact)
    assert joint.shape == (7, 1024)
    assert torch.allclose(joint.exp().sum(-1), torch.ones(7), atol=1e-5)
    best = fact.merge(torch.stack([g.argmax(-1) for g in logits], -1))
    assert torch.equal(joint.argmax(-1), best)


def test_model_heads_and_parameter_count(one_thread):
    config = tiny_config()
    model = SuperResTransformer(config)
    assert model.num_parameters() == config.parameter_count()
    ids = torch.randint(1024, (2, 1280))
    lr = torch.randint(1024, (2, 320))
    out = model(ids, lr, hr_masked=torch.rand(2, 1280) < 0.5)
    assert [o.shape for o in out] == [(2, 1280, 32), (2, 1280, 32)]
    for name, preset in PAPER_STAGES.items():  # about 1B and 500M (paper A.3)
        count = StageConfig(**preset).parameter_count()
        assert (0.9e9 if name.endswith("1") else 0.4e9) < count < 1.2e9, (name, count)


def test_24_step_sampling_fills_every_token(one_thread):
    torch.manual_seed(0)
    model = SuperResTransformer(tiny_config()).eval()
    seen = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(int(kwargs["hr_masked"].sum())),
        with_kwargs=True,
    )
    lr = torch.randint(1024, (1, 320))
    text = torch.randn(1, 4, 8)
    ids = sample_tokens(model, lr, text, steps=24, text_scale=4.0, lr_scale=2.0, seed=0)
    hook.remove()
    schedule = mask_schedule(24, 1280)
    assert len(seen) == 24 and schedule[-1] == 0
    assert all(a > b for a, b in itertools.pairwise([1280, *schedule]))
    # each call runs three guidance branches of one clip; masked counts follow the schedule
    assert seen == [3 * n for n in [1280, *schedule[:-1]]]
    assert ids.shape == (1, 1280) and 0 <= int(ids.min()) and int(ids.max()) < 1024
    again = sample_tokens(model, lr, text, steps=24, text_scale=4.0, lr_scale=2.0, seed=0)
    assert torch.equal(ids, again)


def test_guidance_at_scale_one_is_the_conditional_model(one_thread):
    torch.manual_seed(1)
    model = SuperResTransformer(tiny_config()).eval()
    lr = torch.randint(1024, (2, 320))
    plain = sample_tokens(model, lr, steps=3, temperature=0, choice_temperature=0)
    guided = sample_tokens(model, lr, steps=3, temperature=0, choice_temperature=0, text_scale=7)
    assert torch.equal(plain, guided)  # no text: the text scale has nothing to act on


def test_smaller_grids_use_clipped_windows(one_thread):
    model = SuperResTransformer(tiny_config()).eval()
    assert effective_window((5, 4, 4), (1, 16, 16)) == (1, 4, 4)
    ids = sample_tokens(model, torch.randint(1024, (1, 64)), grid=(1, 16, 16), steps=2)
    assert ids.shape == (1, 256)
    with pytest.raises(ConfigError, match="grid"):
        model.check_grid((7, 16, 16))


@pytest.mark.parametrize(
    ("axis", "window", "words"),
    [
        ("vertical", (1, 16, 3), "3 does not divide"),
        ("horizontal", (1, 3, 16), "3 does not divide"),
        ("temporal", (2, 4, 4), "2 does not divide the grid's 5 along t"),
        ("temporal", (5, 1, 4), "not a multiple of the scale"),
    ],
)
def test_bad_window_shapes_fail_at_config_time(axis, window, words):
    with pytest.raises(ValidationError) as info:
        tiny_config(windows={**TINY_WINDOWS, axis: window})
    message = str(info.value)
    assert "windows" in message and axis in message and words in message


def test_bad_window_in_a_training_config_names_the_field(tmp_path):
    from videopoet.plugins.superres.train import validate_config

    with pytest.raises(ConfigError) as info:
        validate_config("configs/superres/tiny.yaml", ["stage.windows.vertical=[1,16,3]"])
    assert info.value.field == "stage.windows" and "vertical" in info.value.expected
    with pytest.raises(ConfigError) as info:
        validate_config("configs/superres/tiny.yaml", ["stage.grid=[5,8,8]"])
    assert info.value.field == "stage.grid"


@pytest.mark.parametrize("name", ["tiny", "paper_stage1", "paper_stage2"])
def test_committed_configs_validate(name, tmp_path):
    from videopoet.plugins.superres.train import validate_config

    overrides = []
    if name.startswith("paper"):  # the paper's tokenizer: its declaration, no weights needed
        (tmp_path / "config.json").write_text('{"name": "magvit2"}')
        overrides = [f"tokenizer={tmp_path}"]
    plan = validate_config(f"configs/superres/{name}.yaml", overrides)
    expected = {
        "tiny": ((5, 16, 16), (5, 8, 8)),
        "paper_stage1": ((5, 56, 32), (5, 28, 16)),
        "paper_stage2": ((5, 112, 64), (5, 56, 32)),
    }[name]
    assert (plan.stage.grid, plan.stage.lr_grid) == expected
    if name.startswith("paper"):
        preset = PAPER_STAGES[name]
        assert plan.stage.windows.model_dump() == {
            k: tuple(v) for k, v in preset["windows"].items()
        }
        assert plan.stage.group_bits == [9, 9]
