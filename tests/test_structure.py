"""Structure signals for stylization: DIS flow is right on the world, the structure clip
matches the world's ground-truth one, the third channel is what it says, bad inputs are
ConfigErrors naming the field, and depth models round-trip through a local directory."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from videopoet.core.errors import ConfigError, DuplicateNameError
from videopoet.data import world
from videopoet.plugins import structure
from videopoet.plugins.structure import (
    DepthEstimator,
    TinyDepthConfig,
    TinyDepthNet,
    edges,
    load_depth_model,
    luminance,
    optical_flow,
    register_depth_model,
    structure_clip,
)

pytest.importorskip("cv2")

# the first sample of each moving motion among world samples 0-39 (seed 0, 17x64x64), and
# sample 30: a blue square bouncing on gray, as bright as its background (a grey-only flow
# is 1.9-4.2 px off on it, the colour flow 0.23 px)
MOVING = {0: "bouncing", 2: "up", 4: "down", 5: "shrinking", 7: "right", 13: "growing"}
MOVING |= {21: "left", 30: "bouncing"}


@pytest.fixture(scope="module")
def clips(one_thread):
    """(sample, DIS flow) of the MOVING samples, computed once."""
    out = {}
    for index in MOVING:
        item = world.sample(index, 17, 64, 64)
        out[index] = item, optical_flow(item.video)
    return out


def test_moving_samples_are_what_the_table_says():
    for index, motion in MOVING.items():
        assert world.sample(index, 17, 64, 64).motion == motion
    item = world.sample(30, 17, 64, 64)
    assert (item.color, item.background) == ("blue", "gray")


@pytest.mark.parametrize("index", list(MOVING))
def test_dis_flow_recovers_the_objects_motion(clips, index):
    # measured (python -m videopoet.plugins.structure.measure): mean end-point error on the
    # object 0.12 px over 107 moving clips, worst clip 0.48 px; these clips 0.05-0.23 px
    item, flow = clips[index]
    assert flow.shape == (17, 2, 64, 64) and flow.dtype == torch.float32
    inside = item.masks[:-1] > 0.5
    error = (flow[:-1] - item.flow).norm(dim=1)[inside].mean().item()
    zero = item.flow.norm(dim=1)[inside].mean().item()
    assert error < 0.6, f"sample {index}: {error:.3f} px on the object"
    # growing and shrinking move the object's pixels by 0.1-0.2 px a frame; the rest by 1.8+
    ratio = 0.5 if item.motion in ("growing", "shrinking") else 0.2
    assert error < ratio * zero, f"sample {index}: {error:.3f} px against {zero:.3f} px"


def test_flow_direction_follows_the_motion(clips):
    for index, (item, flow) in clips.items():
        inside = item.masks[:-1] > 0.5
        if item.motion in ("left", "right", "up", "down"):
            axis = 0 if item.motion in ("left", "right") else 1
            sign = 1 if item.motion in ("right", "down") else -1
            assert sign * flow[:-1, axis][inside].mean() > 1.0, index


def test_last_frame_repeats_the_one_before(clips):
    _, flow = clips[7]
    assert torch.equal(flow[-1], flow[-2])


def test_structure_clip_matches_the_worlds_ground_truth_clip(clips):
    for index, (item, _) in clips.items():
        ours = structure_clip(item.video, depth=item.depth)
        truth = world.structure_clip(item)
        assert ours.third_channel == "depth" and ours.flow_scale == pytest.approx(3.2)
        assert ours.video.shape == truth.shape == (3, 17, 64, 64)
        assert ours.video.dtype == torch.float32
        assert ours.video.min() >= -1 and ours.video.max() <= 1
        assert torch.equal(ours.video[2], truth[2])  # the depth channel exactly
        # flow channels (normalized by 3.2 px): measured 0.009-0.036 on the object,
        # 0.005-0.11 over the frame (uncovered background behind a fast object)
        masks = item.masks > 0.5
        inside = torch.cat([masks[:-1], masks[-2:-1]])[None].expand(2, -1, -1, -1)
        difference = (ours.video[:2] - truth[:2]).abs()
        assert difference[inside].mean() < 0.08, index
        assert difference.mean() < 0.2, index


def test_flow_scale_is_the_pixels_that_map_to_one(clips):
    item, flow = clips[7]  # moving right at 1.8 px a frame
    clip = structure_clip(item.video, flow_scale=1.0)
    assert clip.flow_scale == 1.0
    assert torch.equal(clip.video[:2], flow.clamp(-1, 1).permute(1, 0, 2, 3))
    assert torch.equal(
        structure_clip(item.video, flow_scale=2).video[:2],
        (flow / 2).clamp(-1, 1).permute(1, 0, 2, 3),
    )


def test_one_frame_has_zero_flow_and_matches_the_world():
    item = world.sample(3, 1, 64, 64)
    assert torch.equal(optical_flow(item.video), torch.zeros(1, 2, 64, 64))
    clip = structure_clip(item.video, depth=item.depth)
    assert torch.equal(clip.video, world.structure_clip(item))
    assert structure_clip(item.video).video.shape == (3, 1, 64, 64)


def test_a_still_clip_has_next_to_no_flow():
    item = world.sample(1, 17, 64, 64)
    assert item.motion == "still"
    assert optical_flow(item.video).abs().max() < 0.05


def known_frames() -> torch.Tensor:
    """Two frames 16x16: left half red, right half green, except a white top row."""
    video = torch.full((3, 2, 16, 16), -1.0)
    video[0, :, :, :8] = 1  # red
    video[1, :, :, 8:] = 1  # green
    video[:, :, 0] = 1  # white
    return video


def test_luminance_is_rec709_luma_of_a_known_frame():
    video = known_frames()
    luma = luminance(video)
    assert luma.shape == (2, 16, 16)
    assert torch.allclose(luma[:, 1:, :8], torch.tensor(0.2126))
    assert torch.allclose(luma[:, 1:, 8:], torch.tensor(0.7152))
    assert torch.allclose(luma[:, 0], torch.tensor(1.0))
    clip = structure_clip(video)
    assert clip.third_channel == "luminance"
    assert torch.allclose(clip.video[2], luma * 2 - 1)
    # a still clip: no flow
    assert clip.video[:2].abs().max() < 0.05


def test_edges_are_the_sobel_magnitude_of_the_luma():
    video = torch.full((3, 1, 12, 16), -1.0)
    video[:, :, :, 8:] = 1  # a black-to-white vertical step between columns 7 and 8
    edge = edges(video)
    assert edge.shape == (1, 12, 16)
    assert torch.equal(edge[0, :, 7:9], torch.ones(12, 2))  # a full step is 1
    rest = torch.cat([edge[0, :, :7], edge[0, :, 9:]], 1)
    assert torch.equal(rest, torch.zeros_like(rest))  # flat, and the frame's border is no edge
    half = torch.full((3, 1, 12, 16), -1.0)
    half[:, :, :, 8:] = 0  # half the contrast, half the edge
    assert torch.allclose(edges(half)[0, :, 7:9], torch.full((12, 2), 0.5))
    clip = structure_clip(video, fallback="edges")
    assert clip.third_channel == "edges"
    assert torch.equal(clip.video[2], edge * 2 - 1)


def test_the_fallback_is_never_called_depth():
    video = known_frames()
    for fallback in ("luminance", "edges"):
        assert structure_clip(video, fallback=fallback).third_channel == fallback


def valid_video() -> torch.Tensor:
    return world.sample(2, 4, 16, 16).video  # 4 frames: (T, 3, H, W) is not (3, T, H, W)


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda v: v.numpy(), "video"),
        (lambda v: ((v + 1) * 127.5).to(torch.uint8), "video.dtype"),
        (lambda v: v.permute(1, 0, 2, 3), "video.shape"),  # (T, 3, H, W)
        (lambda v: v[None], "video.shape"),  # batched
        (lambda v: v[:, :0], "video.shape"),  # no frames
        (lambda v: v[:, :, :7, :], "video.shape"),  # below the estimator's patches
        (lambda v: (v + 1) * 127.5, "video.range"),  # [0, 255]
        (lambda v: v * 1.1, "video.range"),
        (lambda v: v.index_fill(1, torch.tensor([1]), math.nan), "video.range"),
    ],
)
def test_bad_videos_are_config_errors_naming_the_field(make, field):
    bad = make(valid_video())
    for call in (structure_clip, optical_flow, luminance, edges):
        with pytest.raises(ConfigError) as info:
            call(bad)
        assert info.value.field == field, call.__name__


def test_a_video_within_rounding_of_the_range_is_clamped():
    video = valid_video()
    video[0, 0, 0, 0] = 1.0005
    clip = structure_clip(video)
    assert clip.video.max() <= 1


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"depth": torch.rand(3, 16, 16)}, "depth.shape"),
        ({"depth": torch.rand(4, 16, 16) + 1.5}, "depth.range"),
        ({"depth": torch.ones(4, 16, 16, dtype=torch.int64)}, "depth.dtype"),
        ({"depth": [[0.5]]}, "depth"),
        ({"flow_scale": 0}, "flow_scale"),
        ({"flow_scale": -3.2}, "flow_scale"),
        ({"flow_scale": math.inf}, "flow_scale"),
        ({"flow_scale": "5%"}, "flow_scale"),
        ({"fallback": "depth"}, "fallback"),
        ({"flow_preset": "slow"}, "flow_preset"),
        ({"depth_model": "/some/folder"}, "depth_model"),
        ({"depth_model": lambda v: torch.rand(v.shape[1], 8, 8)}, "depth_model.output.shape"),
        ({"depth_model": lambda v: torch.rand(v.shape[1:]) - 2}, "depth_model.output.range"),
    ],
)
def test_bad_arguments_are_config_errors_naming_the_field(kwargs, field):
    with pytest.raises(ConfigError) as info:
        structure_clip(valid_video(), **kwargs)
    assert info.value.field == field


def test_a_bad_preset_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        optical_flow(valid_video(), preset="slow")
    assert info.value.field == "preset" and "medium" in str(info.value)


def test_ground_truth_depth_comes_before_a_depth_model():
    item = world.sample(2, 3, 16, 16)
    model = TinyDepthNet()
    clip = structure_clip(item.video, depth=item.depth, depth_model=model)
    assert clip.third_channel == "depth"
    assert torch.equal(clip.video[2], item.depth * 2 - 1)


def test_a_saved_depth_model_loads_back_and_gives_identical_output(tmp_path):
    torch.manual_seed(0)
    model = TinyDepthNet(TinyDepthConfig(channels=8, layers=2))
    with torch.no_grad():  # random weights far from the init, so a mix-up would show
        for p in model.parameters():
            p.normal_(0, 0.5)
    model.save_pretrained(tmp_path / "depth")
    assert json.loads((tmp_path / "depth" / "config.json").read_text())["kind"] == "tiny_depth"
    loaded = load_depth_model(tmp_path / "depth")
    assert isinstance(loaded, TinyDepthNet) and not loaded.training
    assert isinstance(loaded, DepthEstimator)
    assert loaded.config == model.config
    video = world.sample(4, 5, 32, 32).video
    with torch.no_grad():
        expected = model(video)
        assert torch.equal(loaded(video), expected)
    assert expected.shape == (5, 32, 32) and expected.std() > 0.01
    assert 0 <= expected.min() and expected.max() <= 1
    clip = structure_clip(video, depth_model=load_depth_model(str(tmp_path / "depth")))
    assert clip.third_channel == "depth_model"
    assert torch.equal(clip.video[2], expected * 2 - 1)


def test_a_missing_depth_model_path_is_a_clear_error(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError) as info:
        load_depth_model(missing)
    assert info.value.field == "depth_model.path"
    assert str(missing) in str(info.value) and "does not exist" in str(info.value)
    with pytest.raises(ConfigError, match="no-such-model"):
        load_depth_model("https://example.com/no-such-model")


def test_an_incomplete_or_foreign_depth_model_directory_is_a_clear_error(tmp_path):
    TinyDepthNet().save_pretrained(tmp_path / "full")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no config.json"):
        load_depth_model(tmp_path / "empty")
    (tmp_path / "full" / "model.safetensors").rename(tmp_path / "empty" / "model.safetensors")
    with pytest.raises(ConfigError, match="has no model.safetensors"):
        load_depth_model(tmp_path / "full")
    config = {"kind": "tiny_depth", "channels": 4, "layers": 3}  # not the saved 16 channels
    (tmp_path / "empty" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError) as info:
        load_depth_model(tmp_path / "empty")
    assert info.value.field == "depth_model.weights"
    (tmp_path / "empty" / "config.json").write_text(json.dumps({"kind": "midas"}))
    with pytest.raises(ConfigError) as info:
        load_depth_model(tmp_path / "empty")
    assert info.value.field == "depth_model.kind" and "tiny_depth" in str(info.value)
    (tmp_path / "empty" / "config.json").write_text(json.dumps({"kind": "tiny_depth", "x": 1}))
    with pytest.raises(ConfigError) as info:
        load_depth_model(tmp_path / "empty")
    assert info.value.field == "depth_model.x"


def test_another_architecture_registers_by_kind(tmp_path, monkeypatch):
    monkeypatch.setattr(structure.depth, "_REGISTRY", dict(structure.depth._REGISTRY))

    class Flat(torch.nn.Module):
        def __init__(self, level: float) -> None:
            super().__init__()
            self.level = torch.nn.Parameter(torch.tensor(level))

        def forward(self, video: torch.Tensor) -> torch.Tensor:
            return self.level.expand(video.shape[1:]).clone()

    def build(config: dict) -> torch.nn.Module:
        return Flat(0.0)

    register_depth_model("flat", build)
    register_depth_model("flat", build)  # the same factory again is fine
    with pytest.raises(DuplicateNameError, match="flat"):
        register_depth_model("flat", lambda config: Flat(0.0))
    assert "flat" in structure.depth_model_kinds()
    structure.depth.save_pretrained(tmp_path / "flat", Flat(0.25), {"kind": "flat"})
    clip = structure_clip(valid_video(), depth_model=load_depth_model(tmp_path / "flat"))
    assert clip.third_channel == "depth_model"
    assert torch.allclose(clip.video[2], torch.tensor(-0.5))


def test_without_opencv_the_error_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now raises ImportError
    with pytest.raises(ImportError, match="opencv-python-headless"):
        optical_flow(valid_video())
