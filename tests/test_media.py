"""Media files: reading at the paper's formats, writing MP4/WAV/PNG/GIF, and bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from videopoet.core.declarations import Format
from videopoet.data import samples
from videopoet.data.folder import MediaFolder, scan_folder
from videopoet.data.media import (
    MediaError,
    cut_clips,
    frames_to_tensor,
    load_clip,
    probe,
    read_audio,
    read_frames,
    tensor_to_frames,
    write_gif,
    write_media,
    write_mp4,
    write_png,
    write_wav,
)

SR = 16_000
#: AAC works in frames of 1,024 samples; a read-back track may differ from the written one by
#: at most one such frame (64 ms at 16 kHz). In practice the MP4 header's duration trims it
#: exactly, which the round-trip test checks first.
AUDIO_TOLERANCE = 1024


def colour_frames(count: int, height: int = 128, width: int = 128) -> torch.Tensor:
    """Frame i is a flat colour whose red channel encodes i (readable after H.264)."""
    frames = torch.zeros(count, height, width, 3, dtype=torch.uint8)
    for i in range(count):
        frames[i, ..., 0] = (10 + 10 * i) % 256
        frames[i, ..., 1] = 128
        frames[i, ..., 2] = (200 - 5 * i) % 256
    return frames


def tone(seconds: float, freq: float = 440.0) -> torch.Tensor:
    t = torch.arange(round(seconds * SR)) / SR
    return (0.5 * torch.sin(2 * math.pi * freq * t))[None]


# ---------------------------------------------------------------------------- round trips


def test_mp4_round_trip_video_and_audio(tmp_path):
    frames, audio = colour_frames(17), tone(17 / 8)
    path = write_mp4(tmp_path / "clip.mp4", frames, 8, audio, SR)
    info = probe(path)
    assert (info.width, info.height, info.fps, info.video_frames) == (128, 128, 8.0, 17)
    assert info.sample_rate == SR and info.audio_channels == 1
    back = read_frames(path, fps=8)
    assert back.shape == frames.shape
    red = back[..., 0].float().mean(dim=(1, 2))
    assert torch.allclose(red, frames[..., 0].float().mean(dim=(1, 2)), atol=3)
    sound = read_audio(path, SR)
    assert sound.shape[-1] == 34_000  # exact once the header's duration trims the padding
    assert abs(sound.shape[-1] - audio.shape[-1]) <= AUDIO_TOLERANCE
    # same waveform up to AAC's loss: strongly correlated, same loudness
    corr = torch.corrcoef(torch.stack([sound[0, 2048:-2048], audio[0, 2048:-2048]]))[0, 1]
    assert corr > 0.95
    clip = load_clip(path, Format(frames=17), audio=True)
    assert clip.frames.shape == (17, 128, 128, 3) and clip.audio.shape == (1, 34_000)


def test_wav_png_gif_writers(tmp_path):
    audio = tone(0.5)
    wav = write_wav(tmp_path / "a.wav", audio, SR)
    back = read_audio(wav, SR)
    assert back.shape == audio.shape and (back - audio).abs().max() < 1e-4
    frames = colour_frames(5, 64, 96)
    png = write_png(tmp_path / "f.png", frames[2])
    assert read_frames(png, fps=1).shape == (1, 64, 96, 3)
    assert abs(int(read_frames(png, fps=1)[0, ..., 0].float().mean()) - 30) <= 1
    gif = write_gif(tmp_path / "a.gif", frames, 8)
    info = probe(gif)
    assert (info.width, info.height) == (96, 64)
    assert read_frames(gif, fps=8).shape[0] == 5
    assert write_media(tmp_path / "b.mp4", frames, audio=audio).is_file()
    with pytest.raises(Exception, match="path"):
        write_media(tmp_path / "x.txt", frames)
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_tensor_conversions_round_trip():
    frames = colour_frames(3, 8, 8)
    video = frames_to_tensor(frames)
    assert video.shape == (3, 3, 8, 8) and video.min() >= -1 and video.max() <= 1
    assert torch.equal(tensor_to_frames(video), frames)


# ---------------------------------------------------------------------------- resampling


def test_frames_resampled_to_8_fps_by_timestamp(tmp_path):
    path = write_mp4(tmp_path / "20fps.mp4", colour_frames(20), fps=20)  # 1 s at 20 fps
    back = read_frames(path, fps=8)
    assert back.shape[0] == 8
    red = back[..., 0].float().mean(dim=(1, 2))
    # the output frame at t = k/8 is the source frame shown then: index floor(2.5 k)
    expected = torch.tensor([10 + 10 * math.floor(2.5 * k) for k in range(8)]).float()
    assert torch.allclose(red, expected, atol=3)
    later = read_frames(path, fps=8, start=0.5, frames=2)
    assert torch.allclose(later[..., 0].float().mean(dim=(1, 2)), expected[4:6], atol=3)


def test_resize_covers_then_centre_crops(tmp_path):
    frames = torch.zeros(1, 64, 128, 3, dtype=torch.uint8)
    frames[:, :, :32] = 255  # white bands at the far left and right...
    frames[:, :, -32:] = 255
    frames[:, :, 32:96, 1] = 200  # ...and a green centre
    path = write_mp4(tmp_path / "wide.mp4", frames, fps=8)
    square = read_frames(path, size=(32, 32))
    assert square.shape == (1, 32, 32, 3)
    assert (square[..., 0].float().mean() < 20) and (square[..., 1].float().mean() > 180)
    portrait = read_frames(path, size=(224, 128))
    assert portrait.shape == (1, 224, 128, 3)


def test_cut_clips_of_17_and_41_frames():
    frames = colour_frames(90, 8, 8)
    assert cut_clips(frames, 17).shape == (5, 17, 8, 8, 3)
    assert cut_clips(frames, 41).shape == (2, 41, 8, 8, 3)
    assert cut_clips(frames, 41, stride=8).shape == (7, 41, 8, 8, 3)
    with pytest.raises(MediaError, match="a clip needs 41"):
        cut_clips(frames[:40], 41)


def test_audio_is_resampled_and_downmixed(tmp_path):
    stereo = torch.cat([tone(1.0, 440), tone(1.0, 440)])
    path = write_wav(tmp_path / "s.wav", stereo, 44_100)  # written as if at 44.1 kHz
    audio = read_audio(path, SR)
    assert audio.shape == (1, round(SR * 16_000 / 44_100))
    assert read_audio(path, 8_000, start=0.1, seconds=0.2).shape == (1, 1_600)


# ---------------------------------------------------------------------------- bad inputs


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(MediaError, match="nothing.mp4: no such file") as err:
        probe(tmp_path / "nothing.mp4")
    assert err.value.problem == "missing"
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00 ftypisom" + bytes(range(256)) * 8)
    with pytest.raises(MediaError, match="corrupt.mp4") as err:
        read_frames(bad)
    assert err.value.problem == "corrupt"
    good = write_mp4(tmp_path / "cut.mp4", colour_frames(17), 8)
    (tmp_path / "truncated.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(MediaError, match="truncated.mp4"):
        read_frames(tmp_path / "truncated.mp4")


def test_no_video_too_short_and_no_audio(tmp_path):
    wav = write_wav(tmp_path / "speech.wav", tone(3.0), SR)
    with pytest.raises(MediaError, match="speech.wav: has no video stream") as err:
        load_clip(wav, Format(frames=17))
    assert err.value.problem == "no_video"
    short = write_mp4(tmp_path / "short.mp4", colour_frames(9), 8, tone(9 / 8))
    with pytest.raises(MediaError, match=r"short.mp4: gives 9 frames.*needs 17") as err:
        load_clip(short, Format(frames=17))
    assert err.value.problem == "too_short"
    silent = write_mp4(tmp_path / "silent.mp4", colour_frames(17), 8)
    with pytest.raises(MediaError, match="silent.mp4: has no audio track") as err:
        load_clip(silent, Format(frames=17), audio=True)
    assert err.value.problem == "no_audio"
    with pytest.raises(MediaError, match="silent.mp4: has no audio track"):
        read_audio(silent)
    assert load_clip(silent, Format(frames=17)).audio is None  # fine when sound is optional


def test_folder_scan_skips_and_reports_bad_files(tmp_path):
    write_mp4(tmp_path / "good.mp4", colour_frames(40, 64, 64), 8, tone(5.0))
    write_mp4(tmp_path / "sub" / "silent.mp4", colour_frames(17, 64, 64), 8)
    write_mp4(tmp_path / "short.mp4", colour_frames(9, 64, 64), 8, tone(9 / 8))
    (tmp_path / "corrupt.mp4").write_bytes(b"not a video at all")
    fmt = Format(frames=17, height=32, width=32)
    report = scan_folder(tmp_path, fmt, audio=True, progress=False)
    assert report.clips == [(str(tmp_path / "good.mp4"), 0.0), (str(tmp_path / "good.mp4"), 2.125)]
    reasons = dict(report.skipped)
    assert set(reasons) == {
        str(tmp_path / n) for n in ("corrupt.mp4", "short.mp4", "sub/silent.mp4")
    }
    assert "no audio" in reasons[str(tmp_path / "sub/silent.mp4")]
    assert "needs 17" in reasons[str(tmp_path / "short.mp4")]
    assert "3 skipped" in report.summary()
    folder = MediaFolder(tmp_path, fmt, audio=True, progress=False)
    clip = folder[1]
    assert clip.frames.shape == (17, 32, 32, 3) and clip.audio.shape == (1, 34_000)
    assert len(scan_folder(tmp_path, fmt, progress=False).clips) == 3  # silent is fine now


# ---------------------------------------------------------------------------- real media


@pytest.mark.media
@pytest.mark.parametrize("height,width", [(128, 128), (224, 128)])
@pytest.mark.parametrize("frames", [17, 41])
def test_real_cockatoo_clip_at_the_paper_formats(frames, height, width):
    path = samples.require(samples.COCKATOO) / samples.COCKATOO
    clip = load_clip(path, Format(frames=frames, height=height, width=width), start=2.0)
    assert clip.frames.shape == (frames, height, width, 3)
    assert clip.fps == 8
    assert clip.frames.float().std() > 10  # a real picture, not a flat frame
    # consecutive 8 fps frames of a real scene differ, but not wildly
    step = (clip.frames[1:].float() - clip.frames[:-1].float()).abs().mean()
    assert 0.1 < step < 60
    assert clip.audio.shape == (1, round(frames / 8 * SR))  # its track is present but silent


@pytest.mark.media
@pytest.mark.parametrize("height,width", [(128, 128), (224, 128)])
def test_real_short_clip_with_sound(height, width):
    path = samples.require(samples.REALSHORT) / samples.REALSHORT
    info = probe(path)
    assert (info.width, info.height, info.sample_rate) == (320, 240, 48_000)
    # 1.2 s gives 9 whole frames at 8 fps plus a partial one: a 9-frame clip (1 + 4*2, a length
    # the causal tokenizer takes) with its sound resampled to 16 kHz ...
    clip = load_clip(path, Format(frames=9, height=height, width=width), audio=True)
    assert clip.frames.shape == (9, height, width, 3)
    assert clip.audio.shape == (1, 18_000) and clip.audio.abs().max() > 0.01
    # ... and too short for the paper's 17 frames: a clear error, not a shorter clip
    with pytest.raises(MediaError, match=r"realshort.mp4: gives 10 frames.*needs 17") as err:
        load_clip(path, Format(frames=17, height=height, width=width))
    assert err.value.problem == "too_short"


@pytest.mark.media
def test_real_speech_and_music_read_at_16khz():
    samples.require("speech/transcripts.txt", "music/loop_amen.flac")
    speech = samples.speech_clips()
    assert len(speech) > 300
    path, text = next((p, t) for p, t in speech if p.stem == "auth-thankyou")
    assert text == "Thank you."
    assert probe(path).sample_rate == 8_000
    audio = read_audio(path, SR)
    assert audio.shape[0] == 1 and audio.abs().max() > 0.05
    assert abs(audio.shape[-1] - round(probe(path).duration * SR)) <= 2
    music = read_audio(samples.sample("music/loop_amen.flac"), SR)
    assert abs(music.shape[-1] / SR - 1.753) < 0.01  # 44.1 kHz stereo in, 16 kHz mono out
    assert np.isfinite(music.numpy()).all() and music.abs().max() <= 1.0


def test_written_media_follow_the_umask(tmp_path):
    import os

    from videopoet.data.media import write_wav

    old = os.umask(0o022)
    try:
        path = write_wav(tmp_path / "a.wav", torch.zeros(1, 160))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
