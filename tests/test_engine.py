"""The Engine and `videopoet generate`: written files decode to the declared media, and every
bad input is a clear error naming what the task takes (issue 9)."""

from __future__ import annotations

import json
import shutil

import av
import pytest
import torch

from videopoet.cli import main
from videopoet.core.engine import Engine
from videopoet.core.errors import ConfigError, UnknownNameError, VideoPoetError, VocabularyError
from videopoet.data import world
from videopoet.data.media import write_mp4, write_png
from videopoet.tasks.base import InputError


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A world sample as files: clip.mp4 (with sound), frame0.png, audio.wav, caption.txt."""
    from videopoet.data.world_files import write_sample

    out = tmp_path_factory.mktemp("world")
    write_sample(world.sample(7, 17, 64, 64), out, 0)
    return out


def _generate(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured


def _streams(path):
    """(RGB frames, the video's frame rate, the audio's sample rate; None where a stream is
    absent), read while the file is open: PyAV 18 refuses a closed container's stream rates."""
    with av.open(str(path)) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)] if video else []
        fps = float(video.average_rate) if video is not None else None
        sample_rate = audio.rate if audio is not None else None
    return frames, fps, sample_rate


# ---------------------------------------------------------------------------- CLI outputs


def test_generate_video_writes_an_mp4_of_the_format(tiny_bundle, inputs, tmp_path, capsys):
    caption = (inputs / "caption.txt").read_text().strip()
    argv = ["generate", "t2v", "--checkpoint", str(tiny_bundle), "--text", caption]
    code, out = _generate([*argv, "--out", str(tmp_path), "--seed", "0", "--quiet"], capsys)
    assert code == 0, out.err
    record = json.loads(out.out.strip().splitlines()[-1])
    assert record["format"] == "17x64x64"
    frames, fps, sample_rate = _streams(tmp_path / "t2v.mp4")
    assert len(frames) == 17 and frames[0].shape == (64, 64, 3)
    assert sample_rate is None
    assert fps == 8


def test_generate_image_writes_a_png(tiny_bundle, tmp_path, capsys):
    argv = ["generate", "t2i", "--checkpoint", str(tiny_bundle), "--text", "a red square"]
    code, out = _generate([*argv, "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 0, out.err
    frames, _, _ = _streams(tmp_path / "t2i.png")
    assert len(frames) == 1 and frames[0].shape == (64, 64, 3)


def test_generate_audio_writes_a_wav_of_the_clip_length(tiny_bundle, inputs, tmp_path, capsys):
    argv = ["generate", "v2a", "--checkpoint", str(tiny_bundle)]
    argv += ["--video", str(inputs / "clip.mp4"), "--out", str(tmp_path), "--quiet"]
    code, out = _generate(argv, capsys)
    assert code == 0, out.err
    with av.open(str(tmp_path / "v2a.wav")) as container:
        stream = container.streams.audio[0]
        samples = sum(f.samples for f in container.decode(audio=0))
    assert stream.rate == 16_000 and samples == 34_000  # 17 frames at 8 fps = 2.125 s


def test_generate_audio_and_video_muxes_the_sound(tiny_bundle, inputs, tmp_path, capsys):
    argv = ["generate", "avcont", "--checkpoint", str(tiny_bundle)]
    argv += ["--video", str(inputs / "clip.mp4"), "--audio", str(inputs / "audio.wav")]
    code, out = _generate([*argv, "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 0, out.err
    frames, _, sample_rate = _streams(tmp_path / "avcont.mp4")
    assert len(frames) == 17 and sample_rate == 16_000
    with av.open(str(tmp_path / "avcont.mp4")) as container:
        seconds = float(container.duration) / 1e6
    assert abs(seconds - 17 / 8) < 0.1
    assert (tmp_path / "avcont.wav").is_file()


def test_generate_preview_and_extend(tiny_bundle, inputs, tmp_path, capsys):
    argv = ["generate", "fp", "--checkpoint", str(tiny_bundle), "--video", str(inputs / "clip.mp4")]
    argv += ["--preview", "--extend", "1", "--seed", "1", "--quiet", "--out", str(tmp_path)]
    code, out = _generate(argv, capsys)
    assert code == 0, out.err
    assert out.out.count("preview:") == 5  # one per latent frame (1 + 4 of 17 frames)
    frames, _, _ = _streams(tmp_path / "preview.mp4")
    assert len(frames) == 17
    frames, _, _ = _streams(tmp_path / "fp.mp4")
    assert len(frames) == 17 + 12


# ---------------------------------------------------------------------------- bad inputs


def _error(argv, capsys) -> str:
    code, out = _generate(argv, capsys)
    assert code == 2, (code, out.out, out.err)
    assert "Traceback" not in out.err
    return out.err


def test_unknown_task(tiny_bundle, capsys):
    err = _error(["generate", "t2x", "--checkpoint", str(tiny_bundle), "--text", "a"], capsys)
    assert "unknown task 't2x'" in err and "t2v" in err


def test_required_input_missing_lists_what_the_task_takes(tiny_bundle, capsys):
    err = _error(["generate", "i2v", "--checkpoint", str(tiny_bundle), "--text", "a"], capsys)
    assert "input image=None" in err and "text (text, optional), image (image)" in err


def test_input_the_task_does_not_take(tiny_bundle, inputs, capsys):
    argv = ["generate", "t2v", "--checkpoint", str(tiny_bundle), "--text", "a"]
    err = _error([*argv, "--video", str(inputs / "clip.mp4")], capsys)
    assert "input video=" in err and "one of the task's inputs: text (text)" in err


def test_audio_file_given_as_video(tiny_bundle, inputs, capsys):
    argv = ["generate", "v2a", "--checkpoint", str(tiny_bundle)]
    err = _error([*argv, "--video", str(inputs / "audio.wav")], capsys)
    assert "audio.wav" in err and "a video (the file has no picture)" in err


def test_video_too_short_for_the_format(tiny_bundle, tmp_path, capsys):
    short = write_mp4(tmp_path / "short.mp4", torch.zeros(4, 64, 64, 3, dtype=torch.uint8))
    argv = ["generate", "inpaint", "--checkpoint", str(tiny_bundle), "--video", str(short)]
    err = _error([*argv, "--mask", "8,8,16,16"], capsys)
    assert "at least 17 frames at 8 fps" in err and "it has 4" in err


def test_unreadable_file(tiny_bundle, tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    err = _error(["generate", "v2a", "--checkpoint", str(tiny_bundle), "--video", str(bad)], capsys)
    assert "broken.mp4" in err and "readable" in err


def test_mask_of_the_wrong_size(tiny_bundle, inputs, tmp_path, capsys):
    mask = write_png(tmp_path / "mask.png", torch.full((1, 32, 32, 3), 255, dtype=torch.uint8))
    argv = ["generate", "inpaint", "--checkpoint", str(tiny_bundle)]
    argv += ["--video", str(inputs / "clip.mp4"), "--mask", str(mask)]
    assert "a 64x64 mask (the format's size)" in _error(argv, capsys)
    argv[-1] = "0,0,100,100"
    assert "a box inside the 64x64 frame" in _error(argv, capsys)


def test_format_the_task_or_the_bundle_cannot_hold(tiny_bundle, capsys):
    argv = ["generate", "t2i", "--checkpoint", str(tiny_bundle), "--text", "a"]
    assert "a 1-frame format for task t2i" in _error([*argv, "--format", "17x64x64"], capsys)
    argv[1] = "t2v"
    err = _error([*argv, "--format", "17x128x128"], capsys)
    assert "one of the bundle's formats: 17x64x64, 1x64x64" in err


def test_missing_and_corrupt_bundle_files(tiny_bundle, tmp_path, capsys):
    argv = ["generate", "t2v", "--text", "a", "--checkpoint"]
    assert "bundle directory" in _error([*argv, str(tmp_path / "nope")], capsys)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    (broken / "bundle.json").write_text("{ not json")
    assert "bundle.json" in _error([*argv, str(broken)], capsys)
    shutil.rmtree(broken)
    shutil.copytree(tiny_bundle, broken)
    weights = broken / "lm" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    err = _error([*argv, str(broken)], capsys)
    assert "model.safetensors" in err


def test_a_bundle_from_a_different_vocabulary_is_refused(tiny_bundle, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_bundle, other)
    table = json.loads((other / "lm" / "tokens.json").read_text())
    table["codebooks"][0]["size"] = 2**12  # trained with another visual codebook
    (other / "lm" / "tokens.json").write_text(json.dumps(table))
    with pytest.raises(VocabularyError, match="conflicts with the installed tokenizers"):
        Engine.from_pretrained(other)


def test_an_audio_tokenizer_folder_as_the_visual_one_says_so(tmp_path):
    from videopoet.cli_generate import TINY_AUDIO

    with pytest.raises(ConfigError, match="a visual tokenizer; this folder holds encodec16k_tiny"):
        Engine.create(preset="tiny", visual_dir=TINY_AUDIO, audio_dir=TINY_AUDIO)


# ---------------------------------------------------------------------------- the Python API


def test_engine_errors_are_typed(tiny_engine):
    with pytest.raises(UnknownNameError):
        tiny_engine.generate("t2x", text="a")
    with pytest.raises(InputError, match="input text=None"):
        tiny_engine.generate("t2v")
    with pytest.raises(InputError, match=r"values in \[-1, 1\]"):
        tiny_engine.generate("i2v", image=torch.full((3, 64, 64), 2.0))
    with pytest.raises(VideoPoetError, match="num_samples"):
        tiny_engine.generate("t2v", text="a", num_samples=0)


def test_save_pretrained_round_trips_and_is_atomic(tiny_engine, tmp_path):
    path = tiny_engine.save_pretrained(tmp_path / "copy")
    again = Engine.from_pretrained(path)
    for (name, a), (_, b) in zip(
        tiny_engine.lm.state_dict().items(), again.lm.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert again.vocab.to_dict() == tiny_engine.vocab.to_dict()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    out = tiny_engine.generate("uncond_image", seed=3)
    assert torch.equal(out.tokens, again.generate("uncond_image", seed=3).tokens)


def test_layout_of_a_bundle_shows_its_format_token(tiny_bundle, capsys):
    code, out = _generate(["layout", "t2v", "--checkpoint", str(tiny_bundle)], capsys)
    assert code == 0, out.err
    assert "format 17x64x64" in out.out and "<res_64x64>" in out.out
    assert "total_length 392" in out.out
