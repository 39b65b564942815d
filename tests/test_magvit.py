"""The MAGVIT tokenizer plugin: shapes, bad input, causality, save/load, COMMIT, training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from videopoet.core.errors import ConfigError
from videopoet.core.training import TrainConfig
from videopoet.data.world import EVAL_OFFSET, WorldConfig, make_batch
from videopoet.plugins.magvit import SPEC, TINY_SPEC
from videopoet.plugins.magvit.commit import apply_mask, commit_encode, latent_mask
from videopoet.plugins.magvit.model import MagvitTokenizer, build_tokenizer
from videopoet.tasks.masks import border_mask, box_mask

ROOT = Path(__file__).resolve().parents[1]
MICRO = {"channels": 4, "channel_mult": (1, 1, 2, 2), "num_res_blocks": 1, "mid_blocks": 0}


@pytest.fixture(scope="module")
def tok() -> MagvitTokenizer:
    torch.manual_seed(0)
    return TINY_SPEC.factory(**MICRO).eval()


def clip(b: int, t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, h, w, generator=g) * 2 - 1


@pytest.mark.parametrize(
    "frames,height,width,latent",
    [
        (17, 128, 128, (5, 16, 16)),
        (17, 224, 128, (5, 28, 16)),
        (1, 128, 128, (1, 16, 16)),
        (41, 128, 128, (11, 16, 16)),
        (5, 16, 24, (2, 2, 3)),
    ],
)
def test_latent_shapes(tok, frames, height, width, latent):
    assert tok.latent_shape(frames, height, width) == latent
    assert SPEC.latent_shape(frames, height, width) == latent


@pytest.mark.parametrize("frames", [1, 5, 9])
def test_encode_decode_shapes(tok, frames):
    video = clip(2, frames, 16, 24)
    ids = tok.encode(video)
    shape = tok.latent_shape(frames, 16, 24)
    assert ids.dtype == torch.int64 and ids.shape == (2, shape[0] * shape[1] * shape[2])
    assert ids.min() >= 0 and ids.max() < 2**TINY_SPEC.codebook_bits
    out = tok.decode(ids, shape)
    assert out.shape == video.shape and out.abs().max() <= 1


def test_full_size_shapes_with_the_default_declaration():
    torch.manual_seed(0)
    big = SPEC.factory(channels=4, channel_mult=(1, 1, 1, 1), num_res_blocks=1, mid_blocks=0)
    assert big.codebook_bits == 18 and big.config.name == "magvit2"
    for frames, h, w, latent in [(17, 128, 128, (5, 16, 16)), (17, 224, 128, (5, 28, 16))]:
        ids = big.encode(torch.zeros(1, 3, frames, h, w))
        assert ids.shape == (1, latent[0] * latent[1] * latent[2]) and ids.max() < 2**18
    image = big.encode(torch.zeros(1, 3, 1, 128, 128))
    assert image.shape == (1, 256)
    assert big.decode(image, (1, 16, 16)).shape == (1, 3, 1, 128, 128)


def test_raster_order(tok):
    # ids are the quantized latent grid flattened with w fastest, then h, then t
    video = clip(1, 5, 16, 24)
    latents = tok.encode_latents(video)
    _, grid = tok.quantizer.quantize(latents)
    assert grid.shape == (1, 2, 2, 3)
    assert torch.equal(tok.encode(video), grid.reshape(1, -1))
    assert torch.equal(tok.encode(video)[0, 3 * 2 + 1 * 3 + 2], grid[0, 1, 1, 2])


@pytest.mark.parametrize(
    "video,field",
    [
        (torch.zeros(1, 3, 6, 16, 16), "frames"),
        (torch.zeros(1, 3, 0, 16, 16), "frames"),
        (torch.zeros(1, 3, 5, 20, 16), "height"),
        (torch.zeros(1, 3, 5, 16, 12), "width"),
        (torch.zeros(1, 4, 5, 16, 16), "video.channels"),
        (torch.zeros(3, 5, 16, 16), "video.shape"),
        (torch.full((1, 3, 5, 16, 16), 1.5), "video.values"),
        (torch.full((1, 3, 5, 16, 16), 255.0), "video.values"),
        (torch.zeros(1, 3, 5, 16, 16, dtype=torch.uint8), "video.dtype"),
    ],
)
def test_bad_video_is_a_clear_error(tok, video, field):
    with pytest.raises(ConfigError, match=field) as info:
        tok.encode(video)
    assert "expected" in str(info.value)


def test_bad_ids_are_a_clear_error(tok):
    with pytest.raises(ConfigError, match="ids.values"):
        tok.decode(torch.full((1, 12), 2**TINY_SPEC.codebook_bits), (2, 2, 3))
    with pytest.raises(ConfigError, match="ids.values"):
        tok.decode(torch.full((1, 12), -1), (2, 2, 3))
    with pytest.raises(ConfigError, match="ids.shape"):
        tok.decode(torch.zeros(1, 11, dtype=torch.long), (2, 2, 3))
    with pytest.raises(ConfigError, match="ids.dtype"):
        tok.decode(torch.zeros(1, 12), (2, 2, 3))
    with pytest.raises(ConfigError, match="latent_shape"):
        tok.decode(torch.zeros(1, 12, dtype=torch.long), (0, 2, 6))


def test_bad_network_config_is_a_clear_error():
    with pytest.raises(ConfigError, match="network.codebook_bits"):
        TINY_SPEC.factory(codebook_bits=12)
    with pytest.raises(ConfigError, match="network.chanels"):
        build_tokenizer(chanels=8)
    with pytest.raises(ConfigError, match="network.channel_mult"):
        build_tokenizer(channel_mult=(1, 2))


def test_causality(tok):
    """Tokens of the first k latent frames do not change when later frames do."""
    video = clip(1, 13, 16, 16, seed=1)  # latent t = 4
    changed = video.clone()
    changed[:, :, 5:] = clip(1, 8, 16, 16, seed=2)  # frames 5.. feed latent frames 2, 3
    per_frame = 2 * 2
    a, b = tok.encode(video), tok.encode(changed)
    assert torch.equal(a[:, : 2 * per_frame], b[:, : 2 * per_frame])
    assert not torch.equal(a[:, 2 * per_frame :], b[:, 2 * per_frame :])
    # the continuous latents, not just the signs, are untouched
    la, lb = tok.encode_latents(video), tok.encode_latents(changed)
    assert torch.equal(la[:, :, :2], lb[:, :, :2])
    # and the decoder is causal too: frames 0..4 depend only on latent frames 0, 1
    da, db = tok.decode(a, (4, 2, 2)), tok.decode(b, (4, 2, 2))
    assert torch.equal(da[:, :, :5], db[:, :, :5])


def test_image_is_the_first_frame_of_a_video(tok):
    video = clip(1, 5, 16, 16, seed=3)
    assert torch.equal(tok.encode(video)[:, :4], tok.encode(video[:, :, :1]))


def test_one_frame_image_path(tok):
    """A (B, 3, 1, H, W) image is one latent frame; it is latent frame 0 of any video that
    starts with it (frame 0 alone feeds latent frame 0), both ways through the network."""
    batch, height, width = 2, 32, 48
    video = clip(batch, 9, height, width, seed=4)  # latent (3, 4, 6)
    image = video[:, :, :1].clone()
    latent = tok.latent_shape(1, height, width)
    assert latent == (1, height // 8, width // 8)
    ids = tok.encode(image)
    per_frame = latent[1] * latent[2]
    assert ids.shape == (batch, per_frame) and ids.dtype == torch.int64
    assert len(torch.unique(ids)) > 1  # a real image, not one constant code
    decoded = tok.decode(ids, latent)
    assert decoded.shape == (batch, 3, 1, height, width) and decoded.abs().max() <= 1
    # encoder causality: the image's ids are the video's latent frame 0, and only that
    video_ids = tok.encode(video)
    assert video_ids.shape == (batch, 3 * per_frame)
    assert torch.equal(video_ids[:, :per_frame], ids)
    assert not torch.equal(video_ids[:, per_frame : 2 * per_frame], ids)
    torch.testing.assert_close(
        tok.encode_latents(video)[:, :, :1], tok.encode_latents(image), rtol=1e-5, atol=1e-5
    )
    # a different first frame gives different ids (the equality above is not vacuous)
    other = video.clone()
    other[:, :, :1] = clip(batch, 1, height, width, seed=5)
    assert not torch.equal(tok.encode(other)[:, :per_frame], ids)
    # decoder causality: decoding the image's ids is frame 0 of decoding the video's ids
    video_decoded = tok.decode(video_ids, tok.latent_shape(9, height, width))
    assert video_decoded.shape == video.shape
    torch.testing.assert_close(video_decoded[:, :, :1], decoded, rtol=1e-5, atol=1e-5)


def test_save_and_load(tok, tmp_path):
    tok.save_pretrained(tmp_path / "tok")
    config = json.loads((tmp_path / "tok" / "config.json").read_text())
    assert config["codebook_bits"] == 10 and config["name"] == "magvit2_tiny"
    loaded = MagvitTokenizer.from_pretrained(tmp_path / "tok")
    video = clip(2, 5, 16, 16)
    assert torch.equal(loaded.encode(video), tok.encode(video))
    with pytest.raises(ConfigError, match="directory"):
        MagvitTokenizer.from_pretrained(tmp_path / "missing")


def test_bfloat16(tok):
    low = TINY_SPEC.factory(**MICRO)
    low.load_state_dict(tok.state_dict())
    low = low.to(torch.bfloat16).eval()
    video = clip(2, 5, 16, 16)
    ids = low.encode(video)
    assert ids.dtype == torch.int64
    # signs near zero may flip under bfloat16 rounding; the vast majority must agree
    assert (ids == tok.encode(video)).float().mean() > 0.5
    out = low.decode(ids, (2, 2, 2))
    assert out.dtype == torch.bfloat16 and out.shape == video.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda(tok):
    gpu = TINY_SPEC.factory(**MICRO)
    gpu.load_state_dict(tok.state_dict())
    gpu = gpu.cuda().eval()
    video = clip(2, 5, 16, 16)
    ids = gpu.encode(video.cuda())
    assert ids.device.type == "cuda"
    assert (ids.cpu() == tok.encode(video)).float().mean() > 0.9


def test_training_step_reduces_loss():
    from videopoet.plugins.magvit.losses import LossConfig, tokenizer_losses

    torch.manual_seed(0)
    model = TINY_SPEC.factory(**MICRO).train()
    video = make_batch(list(range(4)), 5, 16, 16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        losses = tokenizer_losses(model, video, LossConfig())
        first = first if first is not None else losses["l2"].item()
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    assert losses["l2"].item() < first * 0.7


def test_object_weights_emphasize_the_object_and_keep_the_loss_scale():
    from videopoet.data.world import sample
    from videopoet.plugins.magvit.losses import LossConfig, pixel_weights, tokenizer_losses

    items = [sample(i, 5, 16, 16) for i in range(2)]
    masks = torch.stack([item.masks for item in items])
    weights = pixel_weights(masks, 4.0)
    assert weights.shape == (2, 1, 5, 16, 16)
    torch.testing.assert_close(weights.mean(dim=(2, 3, 4)), torch.ones(2, 1))
    on_object = masks[:, None] > 0.5
    assert weights[on_object].min() > weights[~on_object].min() * 4
    # uniform weights are the unweighted loss
    torch.manual_seed(0)
    model = TINY_SPEC.factory(**MICRO).eval()
    video = torch.stack([item.video for item in items])
    plain = tokenizer_losses(model, video, LossConfig())
    flat = tokenizer_losses(model, video, LossConfig(), weights=torch.ones(2, 1, 5, 16, 16))
    torch.testing.assert_close(plain["l2"], flat["l2"])
    heavy = tokenizer_losses(model, video, LossConfig(), weights=weights)
    assert not torch.allclose(plain["l2"], heavy["l2"])


def test_init_from_starts_a_run_from_saved_weights(tmp_path):
    from videopoet.core.tokenizer_training import _load_initial_weights

    torch.manual_seed(1)
    saved = TINY_SPEC.factory(**MICRO)
    saved.save_pretrained(tmp_path / "tok")
    torch.manual_seed(2)
    fresh = TINY_SPEC.factory(**MICRO)
    _load_initial_weights(fresh, str(tmp_path / "tok"))
    for (name, a), b in zip(saved.state_dict().items(), fresh.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    other = TINY_SPEC.factory(**{**MICRO, "channels": 8})
    with pytest.raises(ConfigError, match="init_from"):
        _load_initial_weights(other, str(tmp_path / "tok"))
    with pytest.raises(ConfigError, match="init_from"):
        _load_initial_weights(fresh, str(tmp_path / "missing"))


def test_adversarial_term_trains_critic_and_tokenizer_apart():
    from videopoet.plugins.magvit.losses import (
        FrameCritic,
        LossConfig,
        TokenizerWithCritic,
        tokenizer_losses,
    )

    torch.manual_seed(0)
    model = TokenizerWithCritic(TINY_SPEC.factory(**MICRO), FrameCritic(8))
    video = clip(2, 5, 16, 16)
    on = LossConfig(adversarial_weight=1.0, adversarial_start=5)
    with_gan = tokenizer_losses(model, video, on, step=5)
    without = tokenizer_losses(model, video, on, step=0)  # before the start: critic loss only
    assert {"critic", "adversarial"} <= set(with_gan)
    critic = list(model.critic.parameters())
    decoder = model.tokenizer.decoder.conv_out.conv.weight
    g_on = torch.autograd.grad(with_gan["loss"], [*critic, decoder])
    g_off = torch.autograd.grad(without["loss"], [*critic, decoder])
    # the generator term never reaches the critic's weights ...
    for a, b in zip(g_on[:-1], g_off[:-1], strict=True):
        torch.testing.assert_close(a, b)
    # ... but it does reach the tokenizer
    assert not torch.allclose(g_on[-1], g_off[-1])


# ------------------------------------------------------------------------------ COMMIT


def test_latent_mask_marks_the_tokens_a_pixel_mask_touches():
    lat = latent_mask(box_mask(5, 32, 32, (8, 8, 16, 16)))
    assert lat.shape == (2, 4, 4) and lat[:, 1:3, 1:3].all() and lat.sum() == 8
    with pytest.raises(ConfigError, match="mask.shape"):
        latent_mask(box_mask(4, 32, 32, (8, 8, 16, 16)))


MASKS = {
    "inpaint": box_mask(5, 16, 16, (4, 4, 8, 8)),
    "outpaint": border_mask(5, 16, 16, "horizontal", 0.5),
}


@pytest.mark.parametrize("kind", ["inpaint", "outpaint"])
def test_commit_encoding_hides_masked_pixels(tok, kind):
    video = clip(2, 5, 16, 16, seed=4)
    mask = MASKS[kind]
    other = video.clone()
    other[:, :, mask] = clip(2, 5, 16, 16, seed=5)[:, :, mask]  # change only hidden pixels
    cond_a, target_a = commit_encode(tok, video, mask)
    cond_b, target_b = commit_encode(tok, other, mask)
    assert torch.equal(cond_a, cond_b)  # nothing hidden leaks into the condition
    assert not torch.equal(target_a, target_b)  # the target sees the full video
    assert torch.equal(target_a, tok.encode(video))
    assert torch.equal(apply_mask(video, mask)[:, :, mask], torch.zeros_like(video[:, :, mask]))
    with pytest.raises(ConfigError, match="mask.shape"):
        apply_mask(video, mask[:, :8])


# ------------------------------------------------------------------------------ data


def test_training_data_comes_from_the_world_and_holds_out_its_eval_split():
    from videopoet.plugins.magvit.train import MagvitTrainingAdapter

    train = TrainConfig(batch_size=2, progress=False)
    data = {"frames": 5, "height": 16, "width": 16, "eval_clips": 2, "image_fraction": 0.5}
    adapter = MagvitTrainingAdapter(TINY_SPEC.factory(**MICRO), data, {}, train)
    first, again = adapter.batches(3), adapter.batches(3)
    assert torch.equal(first["video"], again["video"])  # a resumed run sees the same batch
    assert first["video"].shape[2] in (1, 5) and first["video"].shape[0] == 2
    frames = {adapter.batches(s)["video"].shape[2] for s in range(20)}
    assert frames == {1, 5}  # images and clips are both drawn
    held_out = make_batch([EVAL_OFFSET, EVAL_OFFSET + 1], 5, 16, 16, WorldConfig())
    assert torch.equal(adapter.eval_videos(), held_out)
    with pytest.raises(ConfigError, match="data.dataset"):
        MagvitTrainingAdapter(TINY_SPEC.factory(**MICRO), {"dataset": "shapes"}, {}, train)


# ------------------------------------------------------------------------------ train-tokenizer


def test_train_tokenizer_yaml_errors(tmp_path):
    from videopoet.core.tokenizer_training import train_tokenizer_from_yaml

    config = ROOT / "configs" / "tokenizer" / "magvit2_tiny.yaml"
    with pytest.raises(ConfigError, match="data.frame") as info:
        train_tokenizer_from_yaml(str(config), ["data.frame=5"])
    assert "frames" in str(info.value)  # the close match is suggested
    with pytest.raises(ConfigError, match="train.stepz"):
        train_tokenizer_from_yaml(str(config), ["train.stepz=5"])
    with pytest.raises(ConfigError, match="data.frames"):
        train_tokenizer_from_yaml(str(config), ["data.frames=6", f"train.out_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="override"):
        train_tokenizer_from_yaml(str(config), ["train.steps"])
    from videopoet.core.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="magvit2_tiny"):
        train_tokenizer_from_yaml(str(config), ["tokenizer=magvit_tiny"])


def test_train_tokenizer_runs_and_resumes(tmp_path):
    from videopoet.core.tokenizer_training import train_tokenizer_from_yaml

    config = str(ROOT / "configs" / "tokenizer" / "magvit2_tiny.yaml")
    common = [
        "network.channels=4", "network.channel_mult=[1,1,2,2]", "network.mid_blocks=0",
        "data.frames=5", "data.height=16", "data.width=16", "data.eval_clips=2",
        "train.batch_size=2", "train.eval_every=2", "train.checkpoint_every=2",
        "train.progress=false", "train.time_limit_s=null", "train.device=cpu",
        f"train.out_dir={tmp_path}",
    ]  # fmt: skip
    first = train_tokenizer_from_yaml(config, [*common, "train.steps=2"])
    assert first["step"] == 2 and {"psnr", "baseline_psnr", "codebook_usage"} <= set(first["eval"])
    second = train_tokenizer_from_yaml(config, [*common, "train.steps=4"])
    assert second["resumed_from"] == 2 and second["step"] == 4
    loaded = MagvitTokenizer.from_pretrained(second["tokenizer_dir"])
    assert loaded.config.channels == 4
    from_checkpoint = MagvitTokenizer.from_pretrained(second["checkpoint"])
    video = clip(1, 5, 16, 16)
    assert torch.equal(loaded.encode(video), from_checkpoint.encode(video))


@pytest.mark.slow
def test_short_training_run_learns(tmp_path):
    """~1 minute of the tiny config at 32×32 through the module's CLI: held-out PSNR rises well
    above the untrained network's and codes are in use. (Beating the mean-colour baseline takes
    the full run of configs/tokenizer/magvit2_tiny.yaml; its figures are in the notes.)"""
    from videopoet.plugins.magvit.train import evaluate

    held_out = make_batch([EVAL_OFFSET + i for i in range(8)], 5, 32, 32)
    torch.manual_seed(0)
    untrained = evaluate(TINY_SPEC.factory(), held_out)
    command = [
        sys.executable, "-m", "videopoet.core.tokenizer_training",
        str(ROOT / "configs" / "tokenizer" / "magvit2_tiny.yaml"),
        "train.steps=150", "train.time_limit_s=120", "train.eval_every=0", "train.warmup_steps=10",
        "train.progress=false", "data.eval_clips=8", "data.height=32", "data.width=32",
        f"train.out_dir={tmp_path}",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=170, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["eval"]["psnr"] > untrained["psnr"] + 2.0, (result["eval"], untrained)
    assert result["eval"]["codes_used"] >= 8
