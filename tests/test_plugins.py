import json
import sys
import textwrap

import pytest

import videopoet
from videopoet.core import plugins
from videopoet.core.declarations import TargetSpec, TaskSpec
from videopoet.core.errors import DuplicateNameError, PluginError
from videopoet.core.plugins import load_registry


def task(name, token="x"):
    return TaskSpec(name=name, task_token=token, target=TargetSpec(visual="video"))


class GoodPlugin:
    @videopoet.hookimpl
    def register_tasks(self):
        return [task("good")]


class RaisingPlugin:
    @videopoet.hookimpl
    def register_tasks(self):
        raise RuntimeError("boom")


class InvalidDeclarationPlugin:
    @videopoet.hookimpl
    def register_tasks(self):
        return [{"name": "Bad Name", "task_token": "x", "target": {"visual": "video"}}]


class WrongTypePlugin:
    @videopoet.hookimpl
    def register_tokenizers(self):
        return ["not a declaration"]


class MisspelledHookPlugin:
    @videopoet.hookimpl
    def register_taskz(self):
        return []


class DuplicatePlugin:
    @videopoet.hookimpl
    def register_tasks(self):
        return [task("t2v")]


def test_builtins_register_through_the_same_group(registry):
    names = {p.name for p in registry.plugins if p.distribution == "videopoet"}
    assert {"tasks", "magvit2", "encodec16k", "text_encoders"} <= names
    assert all(p.ok for p in registry.plugins if p.distribution == "videopoet")
    assert registry.owners[("tasks", "t2v")].name == "tasks"


@pytest.mark.parametrize(
    "plugin,message",
    [
        (RaisingPlugin(), "register_tasks failed: RuntimeError: boom"),
        (InvalidDeclarationPlugin(), "invalid declaration"),
        (WrongTypePlugin(), "expected a TokenizerSpec"),
        (MisspelledHookPlugin(), "invalid hook"),
    ],
)
def test_a_broken_plugin_is_reported_and_the_others_load(plugin, message):
    registry = load_registry(extra_plugins=[("broken", plugin), ("good", GoodPlugin())])
    broken = next(p for p in registry.plugins if p.name == "broken")
    assert any(message in e for e in broken.errors), broken.errors
    assert "good" in registry.tasks and "t2v" in registry.tasks


@pytest.mark.parametrize("plugin", [RaisingPlugin(), InvalidDeclarationPlugin()])
def test_strict_mode_raises(plugin):
    with pytest.raises(PluginError, match="plugin broken"):
        load_registry(strict=True, extra_plugins=[("broken", plugin)])


def test_duplicate_name_names_both_plugins():
    registry = load_registry(extra_plugins=[("dup", DuplicatePlugin())])
    error = next(p for p in registry.plugins if p.name == "dup").errors[0]
    assert "duplicate task name 't2v'" in error
    assert "tasks (videopoet)" in error and "dup ((in process))" in error
    assert registry.owners[("tasks", "t2v")].name == "tasks"  # the first keeps it
    with pytest.raises(DuplicateNameError, match="duplicate task name 't2v'"):
        load_registry(strict=True, extra_plugins=[("dup", DuplicatePlugin())])


def test_disabled_plugins_are_blocked(monkeypatch):
    monkeypatch.setenv(plugins.DISABLED_ENV, "encodec16k, good")
    registry = load_registry(extra_plugins=[("good", GoodPlugin())])
    assert "encodec16k" not in registry.tokenizers and "good" not in registry.tasks
    assert "disabled" in next(p for p in registry.plugins if p.name == "good").errors[0]


@pytest.fixture
def broken_distribution(tmp_path, monkeypatch):
    """An installed distribution whose entry point fails to import."""
    dist = tmp_path / "videopoet_broken-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: videopoet-broken\nVersion: 1.2.3\n"
    )
    (dist / "entry_points.txt").write_text("[videopoet.plugins]\nbroken = videopoet_broken_mod\n")
    (tmp_path / "videopoet_broken_mod.py").write_text("raise ImportError('missing dependency')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "videopoet-broken"
    sys.modules.pop("videopoet_broken_mod", None)


def test_entry_point_that_fails_to_import_is_reported(broken_distribution):
    registry = load_registry()
    broken = next(p for p in registry.plugins if p.name == "broken")
    assert broken.distribution == broken_distribution and broken.version == "1.2.3"
    assert "failed to load: ImportError: missing dependency" in broken.errors[0]
    assert "t2v" in registry.tasks


def test_videopoet_plugins_shows_the_broken_plugin(broken_distribution, monkeypatch, capsys):
    from videopoet import cli

    monkeypatch.setattr(plugins, "get_registry", lambda: load_registry())
    assert cli.main(["plugins", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["broken"]["errors"] and rows["broken"]["distribution"] == "videopoet-broken"
    assert rows["tasks"]["errors"] == []
    assert cli.main(["layout", "t2v"]) == 0  # a broken plugin never bricks the CLI


def test_entry_points_are_deduplicated(monkeypatch):
    from importlib import metadata

    real = metadata.entry_points(group=plugins.GROUP)
    monkeypatch.setattr(plugins.metadata, "entry_points", lambda group: [*real, *real])
    registry = load_registry(strict=True)
    assert len([p for p in registry.plugins if p.name == "tasks"]) == 1


def test_every_hook_is_documented_and_tested():
    from pathlib import Path

    from videopoet.core import hookspecs

    root = Path(__file__).parent.parent
    doc = (root / "docs" / "plugins.md").read_text()
    tests = "".join(p.read_text() for p in (root / "tests").glob("test_*.py"))
    hooks = [n for n in dir(hookspecs) if n.startswith("register_")]
    assert set(hooks) == set(plugins.HOOKS)
    for hook in hooks:
        assert hook in doc, f"{hook} is not documented in docs/plugins.md"
        assert textwrap.dedent(f"def {hook}(") in tests, f"{hook} has no test plugin"


class AllHooksPlugin:
    @videopoet.hookimpl
    def register_text_encoders(self):
        return [videopoet.TextEncoderSpec(name="tiny_text", dim=8)]

    @videopoet.hookimpl
    def register_refiners(self):
        return [videopoet.RefinerSpec(name="tiny_refiner")]


def test_text_encoder_and_refiner_hooks():
    registry = load_registry(extra_plugins=[("all", AllHooksPlugin())])
    assert registry.text_encoder("tiny_text").dim == 8
    assert registry.refiner("tiny_refiner").name == "tiny_refiner"


class ReverseTask:
    """A task class carrying its declaration as ``spec`` (behaviour comes in later issues)."""

    spec = task("as_class")


class TaskClassPlugin:
    @videopoet.hookimpl
    def register_tasks(self):
        return [ReverseTask]


def test_a_task_class_with_a_spec_is_accepted():
    registry = load_registry(strict=True, extra_plugins=[("cls", TaskClassPlugin())])
    assert registry.task("as_class") is ReverseTask.spec


def test_a_task_whose_condition_frames_fit_no_tokenizer_is_rejected_at_registration():
    from videopoet.core.declarations import PrefixSpec

    class TwoFrames:
        @videopoet.hookimpl
        def register_tasks():
            bad = PrefixSpec(visual="video", condition_frames=2)
            good = PrefixSpec(visual="video", condition_frames=9)
            target = TargetSpec(visual="video")
            return [
                TaskSpec(name="two", task_token="two", prefix=bad, target=target),
                TaskSpec(name="nine", task_token="nine", prefix=good, target=target),
            ]

    registry = load_registry(extra_plugins=[("two_frames", TwoFrames)])
    assert "two" not in registry.tasks and "nine" in registry.tasks
    info = next(p for p in registry.plugins if p.name == "two_frames")
    assert "task two: condition frames 2 fit no installed video tokenizer" in info.errors[0]
    with pytest.raises(PluginError, match="condition frames 2"):
        load_registry(strict=True, extra_plugins=[("two_frames", TwoFrames)])


def test_a_registered_task_class_carries_its_behaviour(registry):
    from videopoet.tasks.base import Task
    from videopoet.tasks.inpaint import Inpaint

    assert isinstance(registry.task_behaviour("inpaint"), Inpaint)
    assert type(registry.task_behaviour("t2v")).__mro__[1] is Task
