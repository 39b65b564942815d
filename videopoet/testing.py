"""The contract every registered task must pass, importable by third-party plugin packages.

In a plugin's own test suite::

    from videopoet.testing import TaskContractTests

    class TestMyTask(TaskContractTests):
        task_name = "my_task"

Or call :func:`check_task` directly. Each check raises ``AssertionError`` with a message that
names the task, the format and what is wrong.
"""

from __future__ import annotations

import torch

from videopoet.core.declarations import Format, TaskSpec
from videopoet.core.plugins import Registry, get_registry
from videopoet.core.vocabulary import Vocabulary
from videopoet.sequences.layout import CONTENT, TEXT_SLOT, Layout, build_layout


def check_declaration(spec: TaskSpec) -> None:
    """The declaration re-validates from its own dump (no field was smuggled past pydantic)."""
    again = TaskSpec.model_validate(spec.model_dump())
    assert again == spec, f"task {spec.name}: declaration does not survive a round trip"


def check_layout(spec: TaskSpec, vocab: Vocabulary, fmt: Format) -> Layout:
    """The layout builds and has the structure of Figure 3 and Table 1."""
    layout = build_layout(spec, vocab, fmt)
    where = f"task {spec.name} at {fmt}"
    names = layout.span_names
    assert names[:2] == ["bos", "task"], f"{where}: must start with <bos> <task>, got {names[:2]}"
    assert layout.tokens[1] == vocab.id(spec.token_name), f"{where}: wrong task token"
    first_target = layout.spans[[s.target for s in layout.spans].index(True)]
    assert first_target.name in ("bov_o", "boa_o"), f"{where}: target starts with {first_target}"
    assert layout.prefix_length == first_target.start, f"{where}: prefix_length off"
    targets = [s.target for s in layout.spans]
    assert targets == sorted(targets), f"{where}: a prefix span follows a target span"
    assert layout.loss_mask == [i >= layout.prefix_length for i in range(layout.total_length)]
    assert ("eos" in names) == spec.eos, f"{where}: <eos> present must equal spec.eos"
    for opener, closer in (
        ("bot_i", "eot_i"),
        ("bov_i", "eov_i"),
        ("boa_i", "eoa_i"),
        ("bov_o", "eov_o"),
        ("boa_o", "eoa_o"),
    ):
        assert (opener in names) == (closer in names), f"{where}: {opener} without {closer}"
    for entry in spec.prefix.visual_inputs:
        opener, closer = entry.markers
        want = [opener, entry.span, closer]
        at = names.index(opener) if opener in names else -1
        assert names[at : at + 3] == want, f"{where}: visual input {entry.name} must be {want}"
        assert layout.tokens[layout.span(opener).start] == vocab.id("<bov_i>"), where
        assert layout.tokens[layout.span(closer).start] == vocab.id("<eov_i>"), where
    visual_spans = [n for n in names if n.endswith("_in") and n not in ("audio_in",)]
    order = [e.span for e in spec.prefix.visual_inputs]
    assert visual_spans == order, f"{where}: visual inputs {visual_spans}, declared {order}"
    assert ("bov_o" in names) == bool(spec.target.visual), f"{where}: visual target mismatch"
    assert ("boa_o" in names) == spec.target.audio, f"{where}: audio target mismatch"
    assert ("boa_i" in names) == spec.prefix.audio, f"{where}: audio input mismatch"
    assert ("bot_i" in names) == spec.prefix.text, f"{where}: text input mismatch"
    for span in layout.spans:
        block = layout.tokens[span.start : span.stop]
        if span.kind == "special":
            assert block == [span.token] and span.token < 256, f"{where}: bad special {span}"
        elif span.kind == "text":
            assert set(block) == {TEXT_SLOT} and span.length <= 64, f"{where}: bad text span"
        else:
            assert set(block) == {CONTENT}, f"{where}: bad content span {span.name}"
            for lo, hi in span.ranges:
                assert 256 <= lo < hi <= vocab.size, f"{where}: {span.name} range outside vocab"
    return layout


def check_round_trip(layout: Layout, seed: int = 0) -> None:
    """Random content fills the layout and splits back out unchanged (whole and target-only)."""
    generator = torch.Generator().manual_seed(seed)
    content = {
        s.name: torch.randint(
            0, min(hi - lo for lo, hi in s.ranges), (2, s.length), generator=generator
        )
        for s in layout.content_spans
    }
    ids = layout.fill(content)
    where = f"task {layout.task.name} at {layout.format}"
    assert ids.shape == (2, layout.total_length), f"{where}: filled shape {tuple(ids.shape)}"
    back = layout.split(ids)
    for name, value in content.items():
        assert torch.equal(back[name], value), f"{where}: span {name} did not round-trip"
    target = layout.split(ids[:, layout.prefix_length :])
    for name in target:
        assert torch.equal(target[name], content[name]), f"{where}: target span {name} differs"


def check_task(spec: TaskSpec, registry: Registry | None = None) -> list[str]:
    """Run the whole contract for one task over each of its formats; returns what was checked."""
    registry = registry or get_registry()
    vocab = Vocabulary.from_registry(registry)
    check_declaration(spec)
    done = [f"{spec.name}: declaration"]
    for fmt in spec.formats:
        check_round_trip(check_layout(spec, vocab, fmt))
        done.append(f"{spec.name}: layout + round trip at {fmt}")
    return done


class TaskContractTests:
    """Subclass in a plugin's tests and set ``task_name``; pytest collects the checks."""

    task_name: str = ""

    def _spec(self) -> TaskSpec:
        assert self.task_name, "set task_name on the TaskContractTests subclass"
        return get_registry().task(self.task_name)

    def test_declaration_is_valid(self) -> None:
        check_declaration(self._spec())

    def test_layout_builds_for_each_format(self) -> None:
        spec = self._spec()
        vocab = Vocabulary.from_registry(get_registry())
        for fmt in spec.formats:
            check_layout(spec, vocab, fmt)

    def test_spans_round_trip(self) -> None:
        spec = self._spec()
        vocab = Vocabulary.from_registry(get_registry())
        for fmt in spec.formats:
            check_round_trip(build_layout(spec, vocab, fmt))
