"""`videopoet tokenize` resumes: progress is committed in chunks into `OUT.partial`, a re-run
of the same config goes on after the last one and writes the bytes an uninterrupted run
writes; another config or bundle identity is refused by name; the staging folder goes away."""

from __future__ import annotations

import numpy as np
import pytest

from videopoet.core import lm_training
from videopoet.core.errors import ConfigError
from videopoet.core.lm_training import FolderData, TokenizeConfig, WorldData, tokenize
from videopoet.data.media import write_mp4
from videopoet.data.shard_staging import ShardStaging, staging_folder

TASKS = ["t2i", "t2v"]
TIMING = {"seconds", "examples_per_s", "resumed_examples", "restarted"}


@pytest.fixture(autouse=True)
def small_batches(monkeypatch, one_thread):
    """Batches of 2 samples, so 5 + 2 world samples make 4 batches to stop between."""
    monkeypatch.setattr(lm_training, "ENCODE_BATCH", 2)


def _world(tiny_bundle, out, **changes):
    settings = {"examples_per_task": 5, "eval_examples_per_task": 2}
    data = WorldData(**settings | changes.pop("world", {}))
    fields = {"bundle": str(tiny_bundle), "out": str(out), "tasks": TASKS, "commit_every": 1}
    return TokenizeConfig(world=data, **fields | changes)


def _interrupt(monkeypatch, config, after: int) -> None:
    """Run ``config`` and kill it (as Ctrl-C does) right after its ``after``-th commit."""
    commit, calls = ShardStaging.commit, []

    def dying(self, *args):
        commit(self, *args)
        calls.append(1)
        if len(calls) == after:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(ShardStaging, "commit", dying)
        with pytest.raises(KeyboardInterrupt):
            tokenize(config, progress=False)


def _files(folder):
    files = (p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


def test_a_killed_run_goes_on_to_the_bytes_of_an_uninterrupted_one(
    tiny_bundle, tmp_path, monkeypatch
):
    reference = tokenize(_world(tiny_bundle, tmp_path / "reference"), progress=False)
    assert reference["resumed_examples"] == 0 and reference["examples_per_s"] > 0
    assert not staging_folder(tmp_path / "reference").exists()

    out = tmp_path / "shards"
    _interrupt(monkeypatch, _world(tiny_bundle, out), after=2)
    staging = staging_folder(out)
    assert not out.exists() and staging.is_dir()  # nothing half-written in out
    assert sorted(p.name for p in staging.glob("chunk_*.json")) == [
        "chunk_00000.json",
        "chunk_00001.json",
    ]
    (staging / "chunk_00002.safetensors").write_bytes(b"torn by the kill")  # not committed

    # commit_every and threads may change between attempts
    result = tokenize(_world(tiny_bundle, out, commit_every=3, threads=1), progress=False)
    assert result["resumed_examples"] == 2 * 2 * len(TASKS)  # two batches of two samples
    assert not staging.exists()
    assert _files(out) == _files(tmp_path / "reference")
    assert {k: v for k, v in result.items() if k not in TIMING | {"shards"}} == {
        k: v for k, v in reference.items() if k not in TIMING | {"shards"}
    }


def test_another_config_or_bundle_identity_refuses_to_mix(tiny_bundle, tmp_path, monkeypatch):
    out = tmp_path / "shards"
    _interrupt(monkeypatch, _world(tiny_bundle, out), after=1)
    staging = staging_folder(out)

    with pytest.raises(ConfigError) as info:
        tokenize(_world(tiny_bundle, out, world={"examples_per_task": 6}), progress=False)
    message = str(info.value)
    assert info.value.field == "world.examples_per_task" and info.value.value == 6
    assert "5 then, 6 now" in message and str(staging) in message
    assert "delete" in message and "another out" in message

    from videopoet.data import shards

    identity = shards.engine_identity

    def other_weights(engine):
        record = identity(engine)
        return record | {"visual_tokenizer": {**record["visual_tokenizer"], "weights": "0" * 16}}

    with monkeypatch.context() as patch:
        patch.setattr(shards, "engine_identity", other_weights)
        with pytest.raises(ConfigError, match=r"identity\.visual_tokenizer\.weights"):
            tokenize(_world(tiny_bundle, out), progress=False)
    assert (staging / "chunk_00000.json").is_file()  # refused: nothing thrown away

    # a recipe stage throws the old chunks away instead (the recipe says what to make)
    changed = _world(tiny_bundle, out, world={"examples_per_task": 6})
    result = tokenize(changed, progress=False, restart_changed=True)
    assert result["restarted"] and result["resumed_examples"] == 0
    assert result["examples"] == {"train": 6 * len(TASKS), "eval": 2 * len(TASKS)}
    assert not staging.exists()


def _frames(count: int, shade: int) -> np.ndarray:
    frames = np.full((count, 64, 64, 3), 30, np.uint8)
    for t in range(count):
        frames[t, 20:36, 4 + 2 * t : 20 + 2 * t] = shade
    return frames


def test_a_folder_resumes_with_its_counts(tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.setattr(lm_training, "ENCODE_BATCH", 1)  # one clip a batch
    root = tmp_path / "videos"
    root.mkdir()
    for name, shade in (("a_plain", 90), ("b_red", 160), ("c_blue", 230)):
        write_mp4(root / f"{name}.mp4", _frames(20, shade))
    (root / "b_red.txt").write_text("a red square")
    (root / "c_blue.txt").write_text("a blue square")

    def config(out):
        data = FolderData(root=str(root), eval_fraction=0)
        fields = {"bundle": str(tiny_bundle), "out": str(out), "commit_every": 1}
        return TokenizeConfig(folder=data, tasks=["t2v", "fp"], **fields)

    reference = tokenize(config(tmp_path / "reference"), progress=False)
    out = tmp_path / "shards"
    _interrupt(monkeypatch, config(out), after=1)  # a_plain's fp only: t2v has no caption
    result = tokenize(config(out), progress=False)
    assert result["resumed_examples"] == 1
    assert result["skipped"]["examples"] == {"t2v": {"no_caption": 1}}  # counted before the kill
    assert _files(out) == _files(tmp_path / "reference")
    assert {k: v for k, v in result.items() if k not in TIMING | {"shards"}} == {
        k: v for k, v in reference.items() if k not in TIMING | {"shards"}
    }
    assert not staging_folder(out).exists()


def test_the_recipe_stage_goes_on_and_starts_over_when_its_config_changed(
    tiny_bundle, tmp_path, monkeypatch
):
    from videopoet.recipes.stage_work import WORK, RunInfo, StageContext

    def context(examples: int) -> StageContext:
        config = {"tasks": TASKS, "commit_every": 1}
        config["world"] = {"examples_per_task": examples, "eval_examples_per_task": 2}
        run = RunInfo("r", "r.yaml", "videopoet run r.yaml", {}, tmp_path)
        inputs = {"bundle": tiny_bundle}
        return StageContext("tokenize", tmp_path / "tokenize", inputs, {}, config, False, run)

    commit = ShardStaging.commit

    def dying(self, *args):  # killed right after the first commit
        commit(self, *args)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(ShardStaging, "commit", dying)
        with pytest.raises(KeyboardInterrupt):
            WORK["tokenize"](context(5))
    again = WORK["tokenize"](context(5))
    assert again.result["resumed_examples"] == 2 * len(TASKS) and not again.restarted

    staging = staging_folder(tmp_path / "tokenize" / "shards")
    with monkeypatch.context() as patch:
        patch.setattr(ShardStaging, "commit", dying)
        with pytest.raises(KeyboardInterrupt):
            WORK["tokenize"](context(3))
    assert staging.is_dir()
    changed = WORK["tokenize"](context(4))  # not what the chunks were made for: starts over
    assert changed.restarted and changed.result["resumed_examples"] == 0
    assert changed.result["examples"]["train"] == 4 * len(TASKS)
    assert changed.outputs["shards"].is_dir() and not staging.exists()
