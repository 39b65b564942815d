"""`videopoet tokenize` on a folder of real video files with captions (issue 10, item 1):
captions from a listing or sidecar files, clips cut per video, a seeded train/eval split, the
examples each clip can serve and what was skipped, and clear errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from videopoet.core.errors import ConfigError
from videopoet.core.lm_training import (
    FolderData,
    TokenizeConfig,
    WorldData,
    tokenize,
    tokenize_from_yaml,
    train_lm,
)
from videopoet.core.tokenizer_training import load_config, validate_section
from videopoet.data.folder import pick_windows, read_captions, split_videos
from videopoet.data.media import write_mp4
from videopoet.data.shards import TokenShards, engine_identity

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = REPO / "configs" / "lm" / "folder_tokenize.yaml"
TASKS = ["t2v", "t2i", "i2v", "fp", "stylize", "a2v", "v2a"]
NEEDS_TEXT = {"t2v", "t2i", "stylize"}
NEEDS_AUDIO = {"a2v", "v2a"}
#: the usable videos of the folder below: clips (17 frames at 8 fps), caption, sound
VIDEOS = {
    "red.mp4": (1, "a red square moves right", True),  # sidecar red.txt
    "sub/blue.mp4": (2, "a blue box slides to the right", True),  # captions.jsonl
    "green.mp4": (1, "a green square moves right", False),  # jsonl wins over green.txt
    "plain.mp4": (1, None, False),
}


def _frames(count: int, color: tuple[int, int, int], height: int = 64, width: int = 64):
    frames = np.full((count, height, width, 3), 30, np.uint8)
    for t in range(count):
        x = 4 + (2 * t) % (width - 20)
        frames[t, 20:36, x : x + 16] = color
    return frames


def _tone(frames: int, hz: float) -> np.ndarray:
    t = np.arange(int(frames / 8 * 16_000)) / 16_000
    return (0.3 * np.sin(2 * math.pi * hz * t))[None].astype(np.float32)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    (root / "sub").mkdir()
    write_mp4(root / "red.mp4", _frames(20, (220, 30, 30)), audio=_tone(20, 440))
    (root / "red.txt").write_text("a red square\n  moves right \n")
    # 5 s, not square: two clips, scaled to cover 64x64 and centre-cropped
    write_mp4(root / "sub/blue.mp4", _frames(40, (30, 30, 220), 48, 80), audio=_tone(40, 660))
    write_mp4(root / "green.mp4", _frames(20, (30, 220, 30)))
    (root / "green.txt").write_text("the listing's caption wins over this one")
    write_mp4(root / "plain.mp4", _frames(20, (200, 200, 200)))
    write_mp4(root / "short.mp4", _frames(8, (200, 200, 0)))  # 1 s: too short for 17 frames
    (root / "broken.mp4").write_bytes(b"not a video at all")
    (root / "notes.md").write_text("not a video: ignored")
    rows = [
        {"file": "sub/blue.mp4", "caption": "a blue box slides to the right"},
        {"file": "./green.mp4", "caption": "a green square moves right"},
        {"file": "missing.mp4", "caption": "names no file"},
    ]
    (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def folder_shards(tiny_bundle, videos, tmp_path_factory, one_thread):
    """The committed example config, pointed at the folder (as a user runs it)."""
    out = tmp_path_factory.mktemp("folder_shards") / "shards"
    overrides = [
        f"bundle={tiny_bundle}",
        f"out={out}",
        f"folder.root={videos}",
        "folder.eval_fraction=0.25",
        f"tasks=[{','.join(TASKS)}]",
    ]
    return out, tokenize_from_yaml(str(EXAMPLE_CONFIG), overrides)


def _expected(eval_fraction: float = 0.25, seed: int = 0) -> dict[str, dict[str, int]]:
    splits = split_videos(list(VIDEOS), eval_fraction, seed)
    out = {"train": dict.fromkeys(TASKS, 0), "eval": dict.fromkeys(TASKS, 0)}
    for name, (clips, caption, sound) in VIDEOS.items():
        for task in TASKS:
            if (task in NEEDS_TEXT and caption is None) or (task in NEEDS_AUDIO and not sound):
                continue
            out[splits[name]][task] += clips
    return out


def test_folder_shards_hold_each_task_per_split(folder_shards, tiny_engine):
    out, summary = folder_shards
    expected = _expected()
    assert summary["source"] == "folder"
    assert summary["per_task"] == expected
    assert summary["videos"] == {"train": 3, "eval": 1}  # round(0.25 * 4) videos held out
    assert sum(summary["clips"].values()) == 5
    data = TokenShards(out, engine_identity(tiny_engine))
    for split in ("train", "eval"):
        for task in TASKS:
            assert sum(g.count for g in data.of(split, task)) == expected[split][task]
        for group in data.of(split):
            tokens = data.arrays(group)["tokens"]
            assert tokens.shape == (group.count, group.length)
            assert (tokens[:, 0] == tiny_engine.vocab.id("<bos>")).all()


def test_skipped_files_and_examples_are_counted(folder_shards):
    _, summary = folder_shards
    skipped = summary["skipped"]
    assert skipped["files"] == {"too_short": 1, "corrupt": 1}
    assert skipped["clips"] == 0
    no_caption = sum(c for c, cap, _ in VIDEOS.values() if cap is None)
    no_sound = sum(c for c, _, sound in VIDEOS.values() if not sound)
    for task in NEEDS_TEXT:
        assert skipped["examples"][task] == {"no_caption": no_caption}
    for task in NEEDS_AUDIO:
        assert skipped["examples"][task] == {"no_audio": no_sound}
    assert not {"i2v", "fp"} & set(skipped["examples"])  # they need neither
    assert summary["caption_sources"] == {"listing": 2, "sidecar": 1, "none": 1}
    assert summary["captions_without_video"] == 1  # missing.mp4


def test_meta_records_the_folder(folder_shards, videos):
    out, _ = folder_shards
    meta = json.loads((out / "meta.json").read_text())
    source = meta["source"]
    assert source["kind"] == "folder" and source["root"] == str(videos.resolve())
    assert source["captions"] == str(videos / "captions.jsonl")
    assert source["eval_fraction"] == 0.25 and source["seed"] == 0
    assert source["eval_videos"] == [
        n for n, s in split_videos(list(VIDEOS), 0.25).items() if s == "eval"
    ]
    assert sorted(name for name, _ in source["skipped_files"]) == ["broken.mp4", "short.mp4"]


def test_t2v_text_is_the_caption_encoding(folder_shards, tiny_engine):
    out, _ = folder_shards
    data = TokenShards(out)
    splits = split_videos(list(VIDEOS), 0.25)
    for split in ("train", "eval"):
        captions = {cap for name, (_, cap, _) in VIDEOS.items() if cap and splits[name] == split}
        encodings = {}
        for caption in captions:
            encoded = tiny_engine.text_encoder.encode([caption])
            encodings[caption] = (encoded.embeddings[0], encoded.mask[0])
        found = set()
        for group in data.of(split, "t2v"):
            arrays = data.arrays(group)
            for text, mask in zip(arrays["text"], arrays["text_mask"], strict=True):
                matches = []
                for caption, (embedding, want) in encodings.items():
                    k = int(want.sum())
                    want_text = embedding[:k].to(torch.float16).numpy()
                    if mask.sum() == k and mask[:k].all() and np.array_equal(text[:k], want_text):
                        matches.append(caption)
                assert len(matches) == 1, "a t2v row's text is not one caption's encoding"
                found.add(matches[0])
        assert found == captions


def test_world_source_is_recorded_too(tiny_bundle, tmp_path, one_thread):
    out = tmp_path / "world"
    data = WorldData(examples_per_task=1, eval_examples_per_task=0)
    config = TokenizeConfig(bundle=str(tiny_bundle), out=str(out), tasks=["fp"], world=data)
    assert tokenize(config, progress=False)["source"] == "world"
    assert TokenShards(out).meta["source"] == {"kind": "world", **data.model_dump()}


def test_trains_on_folder_shards(folder_shards, tiny_bundle, tmp_path, one_thread):
    out, _ = folder_shards
    settings = {"steps": 2, "batch_size": 2, "out_dir": str(tmp_path / "run"), "progress": False}
    settings |= {"checkpoint_every": 2, "eval_every": 2, "num_threads": 1}
    raw = {"bundle": str(tiny_bundle), "shards": str(out), "eval_batches": 1, "train": settings}
    result = train_lm(raw)
    assert result["step"] == 2 and Path(result["bundle"], "bundle.json").is_file()


def test_clips_per_video_and_captions_off(tiny_bundle, videos, tmp_path, one_thread):
    """At most one clip a video; a folder without any caption still serves i2v."""
    root = tmp_path / "uncaptioned"
    root.mkdir()
    for name in ("sub/blue.mp4", "plain.mp4"):
        (root / Path(name).name).symlink_to(videos / name)
    folder = FolderData(root=str(root), clips_per_video=1, eval_fraction=0)
    config = TokenizeConfig(
        bundle=str(tiny_bundle), out=str(tmp_path / "s"), tasks=["i2v", "t2v"], folder=folder
    )
    summary = tokenize(config, progress=False)
    assert summary["clips"] == {"train": 2, "eval": 0}
    assert summary["per_task"]["train"] == {"i2v": 2, "t2v": 0}
    assert summary["skipped"]["examples"] == {"t2v": {"no_caption": 2}}
    config.tasks = ["t2v"]
    with pytest.raises(ConfigError) as err:
        tokenize(config, progress=False)
    assert err.value.field == "tasks" and "no_caption" in str(err.value)


# ---------------------------------------------------------------------------- the pieces


def test_split_is_seeded_deterministic_and_keeps_the_fraction():
    names = [f"clips/{i:04d}.mp4" for i in range(1000)]
    split = split_videos(names, 0.1, seed=3)
    assert split == split_videos(list(reversed(names)), 0.1, seed=3)  # order does not matter
    assert sum(s == "eval" for s in split.values()) == 100
    assert split != split_videos(names, 0.1, seed=4)
    assert set(split_videos(names, 0.0).values()) == {"train"}
    # a tiny folder: one video held out, never all of them
    assert list(split_videos(["a.mp4", "b.mp4"], 0.01).values()).count("eval") == 1
    assert list(split_videos(["a.mp4", "b.mp4"], 0.9).values()).count("eval") == 1
    assert split_videos(["a.mp4"], 0.5) == {"a.mp4": "train"}


def test_pick_windows_spreads_over_the_video():
    starts = [2.125 * i for i in range(10)]
    assert pick_windows(starts, None) == starts
    assert pick_windows(starts, 1) == [0.0]
    assert pick_windows(starts, 3) == [starts[0], starts[4], starts[9]]
    assert pick_windows(starts[:2], 5) == starts[:2]


def test_csv_captions(tmp_path):
    (tmp_path / "captions.csv").write_text(
        'file,caption\n"a.mp4","a dog, running"\n./sub/b.mp4,"  two\n   words  "\nc.mp4,\n'
    )
    captions = read_captions(tmp_path)
    assert captions.listing == str(tmp_path / "captions.csv")
    assert captions.by_file == {"a.mp4": "a dog, running", "sub/b.mp4": "two words"}


# ---------------------------------------------------------------------------- errors


def _folder_config(tiny_bundle, tmp_path, **folder) -> TokenizeConfig:
    return TokenizeConfig(
        bundle=str(tiny_bundle), out=str(tmp_path / "out"), folder=FolderData(**folder)
    )


def _field(config: TokenizeConfig) -> tuple[str, str]:
    with pytest.raises(ConfigError) as err:
        tokenize(config, progress=False)
    return err.value.field, str(err.value)


def test_exactly_one_source(tiny_bundle, videos, tmp_path):
    both = _folder_config(tiny_bundle, tmp_path, root=str(videos))
    both.world = WorldData()
    field, message = _field(both)
    assert field == "folder" and "not both" in message
    field, message = _field(TokenizeConfig(bundle=str(tiny_bundle), out=str(tmp_path / "o")))
    assert field == "world" and "folder:" in message


def test_missing_or_empty_root(tiny_bundle, tmp_path):
    field, message = _field(_folder_config(tiny_bundle, tmp_path, root=str(tmp_path / "nope")))
    assert field == "folder.root" and "nope" in message and "does not exist" in message
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no videos here")
    field, message = _field(_folder_config(tiny_bundle, tmp_path, root=str(empty)))
    assert field == "folder.root" and "holds none" in message


def test_no_usable_video(tiny_bundle, tmp_path, one_thread):
    root = tmp_path / "short"
    root.mkdir()
    write_mp4(root / "short.mp4", _frames(8, (200, 200, 0)))
    field, message = _field(_folder_config(tiny_bundle, tmp_path, root=str(root)))
    assert field == "folder.root" and "too_short" in message and "short.mp4" in message


def test_bad_caption_listings(tiny_bundle, videos, tmp_path):
    config = _folder_config(tiny_bundle, tmp_path, root=str(videos), captions="nope.jsonl")
    field, message = _field(config)
    assert field == "folder.captions" and "nope.jsonl" in message
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"file": "red.mp4", "caption": "ok"}\nnot json\n')
    field, message = _field(
        _folder_config(tiny_bundle, tmp_path, root=str(videos), captions=str(bad))
    )
    assert field == "folder.captions" and "bad.jsonl:2" in message
    headless = tmp_path / "c.csv"
    headless.write_text("red.mp4,a red square\n")
    field, message = _field(
        _folder_config(tiny_bundle, tmp_path, root=str(videos), captions=str(headless))
    )
    assert field == "folder.captions" and "file,caption" in message


@pytest.mark.parametrize(
    "folder,field",
    [
        ({"root": "x", "captoins": "c.csv"}, "folder.captoins"),
        ({"root": "x", "eval_fraction": 1.0}, "folder.eval_fraction"),
        ({"root": "x", "clips_per_video": 0}, "folder.clips_per_video"),
        ({"root": "x", "extensions": ["."]}, "folder.extensions"),
    ],
)
def test_config_field_errors(folder, field):
    with pytest.raises(ConfigError) as err:
        validate_section(TokenizeConfig, {"bundle": "b", "out": "o", "folder": folder}, "")
    assert err.value.field.startswith(field)


def test_example_config_validates():
    config = validate_section(TokenizeConfig, load_config(EXAMPLE_CONFIG), "")
    assert config.source() == "folder" and config.folder.extensions[0] == ".mp4"


def test_real_sample_videos(tiny_bundle, tmp_path, one_thread):
    """The fetched sample media: a 14 s 720p clip gives clips, a 1.2 s one is too short."""
    from videopoet.data.samples import COCKATOO, REALSHORT, require

    samples = require(COCKATOO, REALSHORT)
    root = tmp_path / "real"
    root.mkdir()
    for name in (COCKATOO, REALSHORT):
        (root / Path(name).name).symlink_to(samples / name)
    (root / "cockatoo.txt").write_text("a cockatoo on a perch")
    folder = FolderData(root=str(root), clips_per_video=2, eval_fraction=0)
    config = TokenizeConfig(
        bundle=str(tiny_bundle), out=str(tmp_path / "s"), tasks=["t2v", "a2v"], folder=folder
    )
    summary = tokenize(config, progress=False)
    assert summary["per_task"]["train"] == {"t2v": 2, "a2v": 2}  # its silent track is a track
    assert summary["skipped"]["files"] == {"too_short": 1}
