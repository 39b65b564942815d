"""Bad inputs anywhere a user can give one: each is a clear error naming the field or file, the
value and what was expected (or documented behaviour), never a traceback or silently wrong data.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from videopoet import cli
from videopoet.core.declarations import Format
from videopoet.core.errors import ConfigError
from videopoet.data.media import (
    MIN_SOURCE_SIDE,
    MediaError,
    load_clip,
    read_audio,
    read_frames,
    write_mp4,
    write_png,
    write_wav,
)

SR = 16_000
ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    """The CLI's contract for a VideoPoetError: one line, no traceback."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ---------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-0.5", "0"])
def test_layout_refuses_non_finite_or_non_positive_audio_seconds(capsys, value):
    code, _, err = run(capsys, "layout", "v2a", f"--audio-seconds={value}")
    assert code == 2
    line = one_error_line(err)
    assert "audio_seconds=" in line and "positive, finite duration" in line


def test_layout_refuses_absurd_sizes_before_allocating(capsys):
    # 100 M frames would be 6.4 G tokens: a MemoryError before the cap
    code, _, err = run(capsys, "layout", "t2v", "--frames", "100000001", "--any-format")
    assert code == 2
    line = one_error_line(err)
    assert "format='100000001x128x128'" in line and "at most 10,000,000 tokens" in line
    assert "6,400,000,256" in line
    code, _, err = run(capsys, "layout", "v2a", "--audio-seconds", "1e300")
    assert code == 2 and "audio_seconds=1e+300" in one_error_line(err)
    # the paper's largest (super-resolution at 896x512) is far below the cap
    sizes = ["--height", "896", "--width", "512"]
    code, out, _ = run(capsys, "layout", "t2v", "--json", "--any-format", *sizes)
    assert code == 0 and json.loads(out)["total_length"] > 35_840


def test_audio_levels_without_a_checkpoint_is_an_error(capsys):
    code, _, err = run(capsys, "layout", "v2a", "--audio-levels", "2")
    assert code == 2
    line = one_error_line(err)
    assert "audio_levels=2" in line and "--encodec-checkpoint" in line
    saved = ROOT / "checkpoints" / "encodec16k_tiny_world"
    args = ["layout", "v2a", "--audio-levels", "2", "--encodec-checkpoint", str(saved)]
    code, _, err = run(capsys, *args)
    assert code == 2 and "sets the levels" in one_error_line(err)
    code, out, _ = run(capsys, "layout", "v2a", "--json", "--encodec-checkpoint", str(saved))
    assert code == 0  # without --audio-levels the directory's own levels are used
    audio = {s["name"]: s for s in json.loads(out)["spans"]}["audio_out"]
    assert audio["length"] == 106 * 2


def _videopoet(*args: str, stdout=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "videopoet", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )


def test_a_closed_pipe_exits_quietly():
    """`videopoet layout t2v --json | head -1`: no BrokenPipeError traceback."""
    proc = _videopoet("layout", "t2v", "--json")
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 1  # what the Python docs advise for EPIPE
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception" not in err
    head = subprocess.run(
        f"{sys.executable} -m videopoet layout t2v --json | head -1",
        shell=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert head.stdout == "{\n" and "Traceback" not in head.stderr


def test_python_dash_m_videopoet():
    proc = _videopoet("layout", "t2v", "--json")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out)["task"] == "t2v"
    proc = _videopoet("layout", "v2a", "--audio-seconds", "nan")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and one_error_line(err.decode())


# ---------------------------------------------------------------------------- train configs


def test_malformed_and_non_utf8_yaml_name_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tokenizer: magvit2_tiny\ntrain: {steps: 1\n  out_dir: [x\n")
    code, _, err = run(capsys, "train-tokenizer", str(bad))
    line = one_error_line(err)
    assert code == 2 and f"config='{bad}'" in line and "valid YAML" in line and "line 3" in line
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("tokenizer: magvit2_tiny\n# café\n".encode("latin-1"))
    code, _, err = run(capsys, "train-tokenizer", str(latin))
    line = one_error_line(err)
    assert code == 2 and f"config='{latin}'" in line and "UTF-8" in line and "0xe9" in line
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    code, _, err = run(capsys, "train-tokenizer", str(listed))
    assert code == 2 and "a YAML mapping" in one_error_line(err)
    good = ROOT / "configs" / "tokenizer" / "magvit2_tiny.yaml"
    code, _, err = run(capsys, "train-tokenizer", str(good), "train.steps=[1")
    assert code == 2 and "override='train.steps=[1'" in one_error_line(err)


def test_an_out_dir_that_cannot_be_created_names_the_path(tmp_path, capsys):
    from videopoet.core.training import ensure_out_dir

    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    config = ROOT / "configs" / "tokenizer" / "encodec16k_tiny.yaml"
    out = blocker / "run"
    code, _, err = run(capsys, "train-tokenizer", str(config), f"train.out_dir={out}")
    line = one_error_line(err)
    assert code == 2 and f"train.out_dir='{out}'" in line and f"{blocker} is a file" in line
    with pytest.raises(ConfigError, match="it is a file"):
        ensure_out_dir(blocker)
    assert ensure_out_dir(tmp_path / "new" / "run").is_dir()


def test_an_out_dir_without_permission_names_the_path(tmp_path, monkeypatch):
    from videopoet.core import training

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)  # root ignores chmod: simulate the refusal
    with pytest.raises(ConfigError) as info:
        training.ensure_out_dir(tmp_path / "locked" / "run")
    assert info.value.field == "train.out_dir" and "Permission denied" in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_out_dir_names_the_path(tmp_path):
    from videopoet.core.training import ensure_out_dir

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="Permission denied"):
            ensure_out_dir(locked / "run")
    finally:
        locked.chmod(0o700)


# ---------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny video tokenizer, audio tokenizer and prefix LM, each saved once."""
    from videopoet.core.model import ModelConfig, PrefixLM
    from videopoet.core.plugins import get_registry
    from videopoet.core.vocabulary import Vocabulary

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("saved")
    registry = get_registry()
    micro = {"channels": 4, "channel_mult": (1, 1, 2, 2), "num_res_blocks": 1, "mid_blocks": 0}
    registry.tokenizer("magvit2_tiny").factory(**micro).save_pretrained(root / "video")
    audio = registry.tokenizer("encodec16k_tiny").factory(n_filters=4, dimension=16, lstm=0)
    audio.save_pretrained(root / "audio")
    vocab = Vocabulary.from_registry(registry, visual="magvit2_tiny", audio="encodec16k_tiny")
    config = ModelConfig.preset("tiny", vocab_size=vocab.size, text_dim=8, grid_positions=False)
    PrefixLM(config).save_pretrained(root / "lm", vocab)
    return root


def _loaders():
    from videopoet.core.lm_checkpoint import load_lm
    from videopoet.plugins.encodec_audio.model import EncodecTokenizer
    from videopoet.plugins.magvit.model import MagvitTokenizer

    return {
        "video": MagvitTokenizer.from_pretrained,
        "audio": EncodecTokenizer.from_pretrained,
        "lm": load_lm,
    }


def _copy(saved: Path, name: str, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(saved / name, tmp_path / name))


@pytest.mark.parametrize("name", ["video", "audio", "lm"])
def test_saved_checkpoints_load(saved, name):
    assert _loaders()[name](saved / name) is not None


@pytest.mark.parametrize("name", ["video", "audio", "lm"])
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_weights_file_names_the_file(saved, tmp_path, name, damage):
    directory = _copy(saved, name, tmp_path)
    weights = directory / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(
        {"truncated": data[: len(data) // 2], "garbage": b"not safetensors" * 64, "empty": b""}[
            damage
        ]
    )
    with pytest.raises(ConfigError) as info:
        _loaders()[name](directory)
    message = str(info.value)
    assert str(weights) in message and "truncated or corrupt" in message


@pytest.mark.parametrize("name", ["video", "audio", "lm"])
def test_weights_of_another_shape_name_the_file_and_tensor(saved, tmp_path, name):
    from safetensors.torch import load_file, save_file

    directory = _copy(saved, name, tmp_path)
    weights = directory / "model.safetensors"
    state = load_file(str(weights))
    key = next(k for k, v in state.items() if v.dim() >= 2)
    state[key] = torch.zeros(*state[key].shape[:-1], state[key].shape[-1] + 1)
    save_file(state, str(weights))
    with pytest.raises(ConfigError) as info:
        _loaders()[name](directory)
    message = str(info.value)
    assert info.value.field == "weights" and str(weights) in message
    assert key in message and "another shape" in message
    del state[key]  # a missing tensor is named too
    save_file(state, str(weights))
    with pytest.raises(ConfigError, match=rf"1 missing, e\.g\. {key}"):
        _loaders()[name](directory)


@pytest.mark.parametrize("name", ["video", "audio", "lm"])
def test_a_broken_config_json_names_the_file(saved, tmp_path, name):
    directory = _copy(saved, name, tmp_path)
    config = directory / "config.json"
    text = config.read_text()
    config.write_text(text[: len(text) // 2])
    with pytest.raises(ConfigError) as info:
        _loaders()[name](directory)
    assert str(config) in str(info.value) and "valid JSON file (line" in str(info.value)
    config.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ConfigError, match="UTF-8"):
        _loaders()[name](directory)
    config.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="a JSON object, not a list"):
        _loaders()[name](directory)


def test_a_config_with_bad_values_names_the_file(saved, tmp_path):
    for name, key in (("video", "channels"), ("audio", "n_filters")):
        directory = _copy(saved, name, tmp_path)
        config = json.loads((directory / "config.json").read_text())
        config[key] = -3
        (directory / "config.json").write_text(json.dumps(config))
        with pytest.raises(ConfigError) as info:
            _loaders()[name](directory)
        assert str(directory / "config.json") in str(info.value) and key in str(info.value)


def test_an_audio_tokenizer_is_not_loaded_as_the_video_tokenizer(saved):
    with pytest.raises(ConfigError) as info:
        _loaders()["video"](saved / "audio")
    message = str(info.value)
    assert "expected a magvit video tokenizer checkpoint" in message
    assert "holds an audio tokenizer (kind 'encodec_audio', name 'encodec16k_tiny')" in message


def test_a_video_tokenizer_is_not_loaded_as_the_audio_tokenizer(saved, tmp_path):
    with pytest.raises(ConfigError) as info:
        _loaders()["audio"](saved / "video")
    message = str(info.value)
    assert "expected a encodec_audio audio tokenizer checkpoint" in message
    assert "holds a video tokenizer (kind 'magvit', name 'magvit2_tiny')" in message
    # a directory saved before magvit recorded its kind is recognised too
    committed = ROOT / "checkpoints" / "magvit2_tiny_world"
    old = tmp_path / "kindless"
    old.mkdir()
    config = json.loads((committed / "config.json").read_text())
    config.pop("kind", None)
    (old / "config.json").write_text(json.dumps(config))
    shutil.copy(committed / "model.safetensors", old / "model.safetensors")
    with pytest.raises(ConfigError, match=r"holds a video tokenizer \(name 'magvit2_tiny'\)"):
        _loaders()["audio"](old)
    assert _loaders()["video"](old).config.name == "magvit2_tiny"
    assert _loaders()["video"](committed).config.name == "magvit2_tiny"


def test_a_tokenizer_is_not_loaded_as_the_lm_and_back(saved):
    with pytest.raises(ConfigError, match="expected a videopoet.prefix_lm checkpoint.*video"):
        _loaders()["lm"](saved / "video")
    with pytest.raises(ConfigError, match="kind 'videopoet.prefix_lm'"):
        _loaders()["video"](saved / "lm")
    with pytest.raises(ConfigError, match="kind 'videopoet.prefix_lm'"):
        _loaders()["audio"](saved / "lm")


def test_an_lm_without_its_token_table_says_so(saved, tmp_path):
    directory = _copy(saved, "lm", tmp_path)
    (directory / "tokens.json").unlink()
    with pytest.raises(ConfigError, match="it has no tokens.json"):
        _loaders()["lm"](directory)


def test_missing_files_name_the_directory(saved, tmp_path):
    for name, loader in _loaders().items():
        directory = _copy(saved, name, tmp_path)
        (directory / "model.safetensors").unlink()
        with pytest.raises(ConfigError, match="it has no model.safetensors"):
            loader(directory)
        with pytest.raises(ConfigError, match="it does not exist"):
            loader(tmp_path / "nowhere")


# ---------------------------------------------------------------------------- media


def colour_frames(count: int, height: int = 32, width: int = 32) -> torch.Tensor:
    frames = torch.zeros(count, height, width, 3, dtype=torch.uint8)
    for i in range(count):
        frames[i, ..., 0] = 10 + 10 * i
    return frames


def tone(seconds: float) -> torch.Tensor:
    t = torch.arange(round(seconds * SR)) / SR
    return (0.5 * torch.sin(2 * math.pi * 440 * t))[None]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    video = write_mp4(root / "clip.mp4", colour_frames(24), 8, tone(3.0))  # 3 s
    wav = write_wav(root / "tone.wav", tone(3.0))
    return video, wav


@pytest.mark.parametrize("start", [-1, -0.5, float("nan"), float("inf")])
def test_a_negative_or_non_finite_start_is_a_config_error(media, start):
    video, wav = media
    fmt = Format(frames=9, height=32, width=32)
    for call in (
        lambda: load_clip(video, fmt, start=start),
        lambda: read_frames(video, start=start),
        lambda: read_audio(wav, start=start),
    ):
        with pytest.raises(ConfigError) as info:
            call()
        assert info.value.field == "start" and ">= 0" in str(info.value)


def test_a_start_past_the_end_is_too_short(media):
    video, wav = media
    with pytest.raises(MediaError, match=r"clip.mp4: lasts 3 s; start=10 s is past its end") as e:
        load_clip(video, Format(frames=9, height=32, width=32), start=10)
    assert e.value.problem == "too_short"
    for start in (3, 10):
        with pytest.raises(MediaError, match=rf"has 3 s of video; start={start} s is past") as e:
            read_frames(video, start=start)
        assert e.value.problem == "too_short"
        with pytest.raises(MediaError, match=rf"has 3 s of audio; start={start} s is past") as e:
            read_audio(wav, start=start)
        assert e.value.problem == "too_short"
    # inside the file: a span running past the end is cut there (documented), not an error
    assert read_audio(wav, start=2.9, seconds=1.0).shape == (1, 1_600)
    assert read_frames(video, start=2.9).shape[0] == 1


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"size": (0, 0)}, "size"),
        ({"size": (-8, 8)}, "size"),
        ({"size": (8,)}, "size"),
        ({"size": (8.5, 8)}, "size"),
        ({"frames": 0}, "frames"),
        ({"frames": -2}, "frames"),
        ({"fps": float("nan")}, "fps"),
        ({"fps": float("inf")}, "fps"),  # used to loop forever
        ({"fps": 0}, "fps"),
        ({"min_side": 0}, "min_side"),
    ],
)
def test_bad_read_frames_arguments_name_the_argument(media, kwargs, field):
    with pytest.raises(ConfigError) as info:
        read_frames(media[0], **kwargs)
    assert info.value.field == field


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"sample_rate": 0}, "sample_rate"),
        ({"sample_rate": -16_000}, "sample_rate"),
        ({"sample_rate": 16_000.5}, "sample_rate"),
        ({"seconds": -1.0}, "seconds"),
        ({"seconds": float("nan")}, "seconds"),
    ],
)
def test_bad_read_audio_arguments_name_the_argument(media, kwargs, field):
    with pytest.raises(ConfigError) as info:
        read_audio(media[1], **kwargs)
    assert info.value.field == field
    with pytest.raises(ConfigError):
        load_clip(media[0], Format(frames=9, height=32, width=32), sample_rate=0)


def test_a_picture_smaller_than_a_patch_is_not_blown_up(tmp_path):
    assert MIN_SOURCE_SIDE == 8
    dot = write_png(tmp_path / "dot.png", torch.full((1, 1, 3), 200, dtype=torch.uint8))
    with pytest.raises(MediaError, match=r"dot.png: is 1x1 pixels.*smaller than 8 px") as info:
        read_frames(dot, size=(128, 128))
    assert info.value.problem == "too_small"
    assert read_frames(dot).shape == (1, 1, 1, 3)  # without size=: the file's own size
    assert read_frames(dot, size=(16, 16), min_side=1).shape == (1, 16, 16, 3)  # if asked
    strip = write_mp4(tmp_path / "strip.mp4", colour_frames(9, 4, 64), 8)
    fmt = Format(frames=9, height=64, width=64)
    with pytest.raises(MediaError, match="is 64x4 pixels") as info:
        load_clip(strip, fmt)
    assert info.value.problem == "too_small"
    assert load_clip(strip, fmt, min_side=1).frames.shape == (9, 64, 64, 3)
    # a small picture of at least one patch is scaled up as before
    small = write_mp4(tmp_path / "small.mp4", colour_frames(9, 8, 8), 8)
    assert load_clip(small, fmt).frames.shape == (9, 64, 64, 3)


# ---------------------------------------------------------------------------- model inputs


def test_audio_outside_the_unit_range_is_refused_by_the_audio_tokenizer():
    from videopoet.plugins.encodec_audio.model import RANGE_TOLERANCE, build_tokenizer

    torch.manual_seed(0)
    tok = build_tokenizer(n_filters=4, dimension=16, lstm=0, kmeans_iters=2).eval()
    wav = tone(0.1)[None]  # (1, 1, 1600)
    assert tok.encode(wav).shape[0] == 1
    assert tok.encode(wav / 0.5 * (1 + RANGE_TOLERANCE / 2)).shape[0] == 1  # within the slack
    with pytest.raises(ConfigError) as info:
        tok.encode(wav * 4)
    assert info.value.field == "wav.values" and "[-2, 2]" in str(info.value)
    assert "in [-1, 1]" in str(info.value)


def test_a_caption_with_a_lone_surrogate_names_the_text_input():
    from videopoet.plugins.text.encoders import HashTextEncoder

    encoder = HashTextEncoder()
    with pytest.raises(ConfigError) as info:
        encoder.encode(["a blue circle", "a red \ud800 square"])
    assert info.value.field == "texts[1]" and "U+D800" in str(info.value)
    assert "valid Unicode" in str(info.value)
    assert encoder.encode(["a red \u00e9 square"]).embeddings.shape[0] == 1
