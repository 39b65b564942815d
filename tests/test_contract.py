"""Every registered task, ours and third parties', passes the plugin contract."""

import pytest

from videopoet.core.plugins import get_registry
from videopoet.testing import check_task

TASKS = sorted(get_registry().tasks)


@pytest.mark.parametrize("name", TASKS)
def test_task_contract(registry, name):
    done = check_task(registry.task(name), registry)
    assert len(done) == 1 + len(registry.task(name).formats)


def test_contract_catches_a_broken_layout(registry, vocab, monkeypatch):
    from videopoet import testing
    from videopoet.sequences import layout as layout_module

    real = layout_module.build_layout

    def without_bos(*args, **kwargs):
        built = real(*args, **kwargs)
        built.spans = built.spans[1:]
        return built

    monkeypatch.setattr(testing, "build_layout", without_bos)
    with pytest.raises(AssertionError, match="must start with <bos> <task>"):
        check_task(registry.task("t2v"), registry)
