"""The example third-party plugin (examples/videopoet-example-plugin), installed by .ci/run."""

import json

import pytest

from videopoet import cli
from videopoet.testing import TaskContractTests


@pytest.fixture(scope="module")
def reverse(registry):
    if "reverse" not in registry.tasks:
        pytest.fail("install it first: pip install -e examples/videopoet-example-plugin")
    return registry.task("reverse")


def test_listed_with_its_distribution(reverse, registry, capsys):
    assert registry.owners[("tasks", "reverse")].distribution == "videopoet-example-plugin"
    cli.main(["plugins", "--json"])
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["reverse"]["provides"] == ["task:reverse"] and not rows["reverse"]["errors"]


def test_layout_built(reverse, capsys):
    assert cli.main(["layout", "reverse", "--json"]) == 0
    spans = {s["name"]: s["length"] for s in json.loads(capsys.readouterr().out)["spans"]}
    assert spans["visual_in"] == 1280 and spans["visual_out"] == 1280


def test_declaration_validated(reverse):
    assert type(reverse).model_validate(reverse.model_dump()) == reverse
    assert reverse.token_name == "<task_reverse>"


class TestReverseContract(TaskContractTests):
    task_name = "reverse"
