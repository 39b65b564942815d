"""`videopoet world` writes a sample's files; they decode and the analyser reads them back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from videopoet import cli
from videopoet.data import analyser, media, world


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_world_writes_every_file(tmp_path, capsys):
    code, out, err = run(
        capsys, "world", "--seed", 3, "--index", 2, "--format", "17x64x64", "--out", tmp_path
    )
    assert code == 0, err
    item = world.sample(2, 17, 64, 64, world.WorldConfig(seed=3))
    assert item.caption in out
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"clip.mp4", "frame0.png", "audio.wav", "caption.txt", "structure.mp4"} | {
        "sample.json"
    }
    assert (tmp_path / "caption.txt").read_text().strip() == item.caption

    frames = media.read_frames(tmp_path / "clip.mp4")
    assert frames.shape == (17, 64, 64, 3)
    sound = media.read_audio(tmp_path / "clip.mp4")
    assert sound.shape == (1, 17 * 16_000 // 8)  # exactly the clip's 2.125 s
    info = media.probe(tmp_path / "clip.mp4")
    assert info.video_frames == 17 and info.duration == pytest.approx(17 / 8)
    wav = media.read_audio(tmp_path / "audio.wav")
    assert wav.shape == item.audio.shape and (wav - item.audio).abs().max() < 1e-4
    png = media.read_frames(tmp_path / "frame0.png")
    assert png.shape == (1, 64, 64, 3)
    assert (png[0].int() - media.tensor_to_frames(item.video)[0].int()).abs().max() == 0
    assert media.read_frames(tmp_path / "structure.mp4").shape == (17, 64, 64, 3)

    record = json.loads((tmp_path / "sample.json").read_text())
    assert record["caption"] == item.caption and record["seed"] == 3 and record["index"] == 2
    assert (record["color"], record["shape"], record["motion"]) == (
        item.color,
        item.shape,
        item.motion,
    )
    assert record["format"] == "17x64x64" and len(record["centers"]) == 17
    np.testing.assert_allclose(record["sizes"], item.sizes.numpy(), atol=1e-3)
    assert record["bounce_times"] == pytest.approx(item.bounce_times, abs=1e-4)

    # H.264 at crf 18 is mild: the analyser still reads the clip and its sound
    seen = analyser.analyse_video(tmp_path / "clip.mp4")
    assert (seen.color, seen.shape, seen.motion) == (item.color, item.shape, item.motion)
    assert np.abs(seen.centers - item.centers.numpy()).max() < 1.0
    heard = analyser.analyse_audio(tmp_path / "clip.mp4")
    errors = np.abs(heard.pitch_at_frames(17) / item.pitch_hz.numpy() - 1)
    assert np.nanmedian(errors) < 0.03


@pytest.mark.parametrize("index", [0, 1, 5])
def test_world_clip_read_back_after_compression(tmp_path, capsys, index):
    code, _, _ = run(capsys, "world", "--index", index, "--out", tmp_path)
    assert code == 0
    item = world.sample(index, 17, 64, 64)
    seen = analyser.analyse_video(tmp_path / "clip.mp4")
    assert (seen.color, seen.motion) == (item.color, item.motion)


def test_world_json_and_flags(tmp_path, capsys):
    code, out, _ = run(
        capsys, "world", "--frames", 1, "--height", 32, "--width", 48, "--out", tmp_path, "--json"
    )
    assert code == 0
    record = json.loads(out)
    assert record == json.loads((tmp_path / "sample.json").read_text())
    assert record["format"] == "1x32x48" and record["motion"] is None
    assert media.read_frames(tmp_path / "clip.mp4").shape == (1, 32, 48, 3)
    assert media.read_audio(tmp_path / "clip.mp4").shape == (1, 2000)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--format", "17x64"], "format='17x64'"),
        (["--format", "17x64x64", "--frames", "9"], "either --format or"),
        (["--format", "17x63x64"], "even height and width"),
        (["--index", "-1"], "index=-1"),
        (["--frames", "0"], "format"),
    ],
)
def test_world_bad_input_is_one_line(tmp_path, capsys, argv, message):
    code, _, err = run(capsys, "world", "--out", tmp_path, *argv)
    assert code == 2
    assert message in err and err.startswith("error:") and "Traceback" not in err
