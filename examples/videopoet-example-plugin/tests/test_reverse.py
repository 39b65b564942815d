"""The example plugin runs videopoet's contract suite over its own task."""

from videopoet.core.plugins import get_registry
from videopoet.testing import TaskContractTests


class TestReverseContract(TaskContractTests):
    task_name = "reverse"


def test_reverse_is_registered_by_this_distribution():
    registry = get_registry()
    assert registry.owners[("tasks", "reverse")].distribution == "videopoet-example-plugin"
