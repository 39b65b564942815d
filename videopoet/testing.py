"""The contract every registered task must pass, importable by third-party plugin packages.

In a plugin's own test suite::

    from videopoet.testing import TaskContractTests

    class TestMyTask(TaskContractTests):
        task_name = "my_task"

Or call the checks directly. Each check raises ``AssertionError`` with a message that names
the task, the format and what is wrong.

- :func:`check_task`: the declaration and its layouts (no model needed);
- :func:`check_example`: the task's behaviour in training: an example cut from a world sample,
  encoded by an engine, has the declared layout, ids in range, media of the format's shape,
  and is a function of its seed (varied over seeds when the task draws random numbers);
- :func:`check_generate`: the task's behaviour in generation: inputs made from a world sample
  give media of the format's frames, size and duration, in [-1, 1], the same for the same seed.

:func:`tiny_engine` is an untrained tiny bundle (seconds on a CPU) over every installed task,
for the last two. The tokenizer contract (``videopoet.testing_tokenizers``) is re-exported here.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import random
from collections.abc import Iterator
from typing import Any

import torch

from videopoet.core.declarations import Format, TaskSpec
from videopoet.core.plugins import Registry, get_registry
from videopoet.core.vocabulary import Vocabulary
from videopoet.sequences.layout import CONTENT, TEXT_SLOT, Layout, build_layout
from videopoet.testing_tokenizers import (
    TokenizerContractTests,
    check_audio_tokenizer,
    check_tokenizer,
    check_visual_tokenizer,
)

__all__ = [
    "TaskContractTests",
    "TokenizerContractTests",
    "check_audio_tokenizer",
    "check_declaration",
    "check_example",
    "check_generate",
    "check_layout",
    "check_round_trip",
    "check_task",
    "check_tokenizer",
    "check_visual_tokenizer",
    "sample_inputs",
    "tiny_engine",
    "world_source",
]


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


# ---------------------------------------------------------------------------- behaviour


@functools.cache
def tiny_engine(seed: int = 0) -> Any:
    """An untrained tiny :class:`~videopoet.core.engine.Engine` over every task installed when it
    is first called: formats 17x64x64 and 1x64x64, the ``hash`` text encoder, the committed tiny
    tokenizers of a videopoet checkout, else untrained tiny tokenizers built from their
    declarations. Cached per ``seed``: a test session builds it once (a few seconds)."""
    from videopoet.cli_generate import TINY_AUDIO, TINY_VISUAL
    from videopoet.core.engine import Engine

    visual, audio = TINY_VISUAL, TINY_AUDIO
    if not (visual / "config.json").is_file() or not (audio / "config.json").is_file():
        visual, audio = _untrained_tokenizers(seed)
    return Engine.create(preset="tiny", visual_dir=visual, audio_dir=audio, seed=seed)


def _untrained_tokenizers(seed: int) -> tuple[Any, Any]:
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    registry = get_registry()
    root = Path(tempfile.mkdtemp(prefix="videopoet-tiny-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    folders = []
    for name in ("magvit2_tiny", "encodec16k_tiny"):
        torch.manual_seed(seed)
        registry.tokenizer(name).factory().save_pretrained(root / name)
        folders.append(root / name)
    return folders[0], folders[1]


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and threads on a busy CI machine stall."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sample_rate(engine: Any) -> int:
    return engine.audio_spec.sample_rate if engine.audio is not None else 16_000


def _samples(seconds: float, sample_rate: int) -> int:
    """Samples in ``seconds`` of audio, as the engine cuts and decodes them."""
    return round(seconds * sample_rate)


def world_source(engine: Any, fmt: Format, index: int = 0) -> Any:
    """Sample ``index`` of the built-in world at ``fmt`` and the engine's sample rate, as a
    :class:`~videopoet.tasks.base.Source` (caption, sound, depth and flow included)."""
    from videopoet.data import world
    from videopoet.tasks.base import Source

    config = world.WorldConfig(sample_rate=_sample_rate(engine))
    return Source.from_world(world.sample(index, fmt.frames, fmt.height, fmt.width, config))


def sample_inputs(task: Any, source: Any, fmt: Format, optional: bool = True) -> dict[str, Any]:
    """User inputs for ``task`` (a behaviour) made from ``source``, by each input's kind: text
    = the caption, image = the first frame, video = the clip, audio = the sound, mask = a box
    over the middle of the frame. Optional inputs are given too when ``optional`` (text only
    for the input named ``text``); a choice or a number keeps its default."""
    box = f"{fmt.height // 4},{fmt.width // 4},{fmt.height // 2},{fmt.width // 2}"
    made = {
        "image": lambda: source.video[:, :1],
        "video": lambda: source.video,
        "audio": lambda: None if source.audio is None else source.audio.reshape(-1),
        "mask": lambda: box,
        "text": lambda: source.caption,
    }
    out: dict[str, Any] = {}
    for info in task.inputs():
        if info.optional and not optional:
            continue
        if info.kind not in made or (info.kind == "text" and info.name != "text"):
            continue  # nothing to make it from: the caller gives it, or its default applies
        value = made[info.kind]()
        if value is not None:
            out[info.name] = value
    return out


def _expected_spans(spec: TaskSpec, present: set[str]) -> list[str]:
    """The content spans (text, inputs, targets) in declaration order for these inputs."""
    prefix, names = spec.prefix, []
    if prefix.text and "text" in present:
        names.append("text")
    names += [entry.span for entry in prefix.visual_inputs if entry.name in present]
    if prefix.audio and "audio" in present:
        names.append("audio_in")
    if spec.target.visual:
        names.append("visual_out")
    if spec.target.audio:
        names.append("audio_out")
    return names


def _check_spans(where: str, spec: TaskSpec, layout: Layout, present: set[str]) -> None:
    prefix = spec.prefix
    declared = (["text"] if prefix.text else []) + [e.name for e in prefix.visual_inputs]
    declared += ["audio"] if prefix.audio else []
    unknown = sorted(present - set(declared))
    assert not unknown, f"{where}: inputs {unknown} are not declared ({declared})"
    missing = [n for n in declared if not prefix.is_optional(n) and n not in present]
    assert not missing, f"{where}: required inputs {missing} are missing"
    assert layout.task.name == spec.name, f"{where}: the layout is {layout.task.name}'s"
    names = [s.name for s in layout.spans if s.kind != "special"]
    want = _expected_spans(spec, present)
    assert names == want, f"{where}: spans {names}, expected {want} for inputs {sorted(present)}"


def _check_ids(where: str, layout: Layout, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """``ids`` (B, L) of the whole layout or its target: every content id in its span's range."""
    from videopoet.core.errors import LayoutError

    try:
        return layout.split(ids)
    except LayoutError as exc:
        raise AssertionError(f"{where}: {exc}") from None


def _check_clip(where: str, what: str, clip: Any, shape: tuple[int, ...]) -> None:
    assert isinstance(clip, torch.Tensor), f"{where}: {what} is {type(clip).__name__}"
    assert tuple(clip.shape) == shape, f"{where}: {what} is {tuple(clip.shape)}, expected {shape}"
    assert clip.is_floating_point(), f"{where}: {what} is {clip.dtype}, expected floats"
    assert torch.isfinite(clip).all(), f"{where}: {what} has non-finite values"
    low, high = float(clip.min()), float(clip.max())
    assert low >= -1 - 1e-4 and high <= 1 + 1e-4, f"{where}: {what} spans [{low}, {high}]"


def _check_media(
    where: str, spec: TaskSpec, fmt: Format, video: Any, audio: Any, sr: int, batch: tuple = ()
) -> None:
    """Target media of the format: frames (1 for an image), size, duration, in [-1, 1]."""
    if spec.target.visual:
        frames = 1 if spec.target.visual == "image" else fmt.frames
        shape = (*batch, 3, frames, fmt.height, fmt.width)
        _check_clip(where, "the visual target", video, shape)
    else:
        assert video is None, f"{where}: a video for a task with no visual target"
    if spec.target.audio:
        shape = (*batch, _samples(fmt.seconds, sr))
        _check_clip(where, f"the audio target ({fmt.seconds:g} s at {sr} Hz)", audio, shape)
    else:
        assert audio is None, f"{where}: audio for a task with no audio target"


class _CountingRandom(random.Random):
    """``random.Random`` that counts draws (same sequence as ``random.Random(seed)``)."""

    draws = 0

    def random(self) -> float:
        self.draws += 1
        return super().random()

    def getrandbits(self, k: int) -> int:
        self.draws += 1
        return super().getrandbits(k)


def _fingerprint(example: Any) -> str:
    """A digest of an example's media: its conditions, masks and targets."""
    digest = hashlib.sha256()
    cond = example.conditions
    digest.update(repr((cond.text, sorted(cond.visual), sorted(cond.masks))).encode())
    tensors = [cond.visual[k] for k in sorted(cond.visual)]
    tensors += [cond.masks[k] for k in sorted(cond.masks)]
    for tensor in [*tensors, cond.audio, example.video, example.audio]:
        if tensor is None:
            digest.update(b"none")
            continue
        tensor = tensor.detach().cpu().contiguous()
        digest.update(repr((tuple(tensor.shape), str(tensor.dtype))).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def _servable(where: str, task_name: str, engine: Any) -> Any:
    assert task_name in engine.tasks(), f"{where}: the engine cannot run it ({engine.tasks()})"
    return engine.task(task_name)


def check_example(
    task_name: str,
    engine: Any,
    seed: int = 0,
    *,
    index: int = 0,
    variety_seeds: int = 8,
) -> Any:
    """A training example of ``task_name`` from world sample ``index`` at the engine's first
    format of the task's kind, built with ``engine.build_example`` and encoded with
    ``engine.encode_example``: inputs and spans as declared (required ones present, optional
    ones as the example has them, declaration order), span lengths as the tokenizers count the
    media, ids in their spans' ranges, target media of the format's frames, size and duration.
    The same seed gives the same tokens; a task that draws random numbers gives different
    examples over ``variety_seeds`` seeds. Returns the :class:`EncodedExample`."""
    behaviour = _servable(f"task {task_name}", task_name, engine)
    spec = behaviour.spec
    fmt = engine.pick_format(spec)
    where = f"task {task_name} at {fmt} (seed {seed})"
    sr = _sample_rate(engine)
    source = world_source(engine, fmt, index)
    example = engine.build_example(task_name, source, fmt, seed)
    assert example.task == task_name, f"{where}: the example is for task {example.task}"
    assert example.format == fmt, f"{where}: the example is at {example.format}"
    cond = example.conditions
    present = cond.present()

    # media: the conditions and the target
    lengths: dict[str, int] = {}
    visual, audio = engine.visual_spec, engine.audio_spec
    for entry in spec.prefix.visual_inputs:
        if entry.name not in cond.visual:
            assert entry.name not in cond.masks, f"{where}: a mask for absent {entry.name}"
            continue
        clip = cond.visual[entry.name]
        frames = clip.shape[1] if clip.dim() == 4 else -1
        what = f"input {entry.name} ({entry.kind})"
        _check_clip(where, what, clip, (3, frames, fmt.height, fmt.width))
        if entry.kind == "image":
            assert frames == 1, f"{where}: {what} has {frames} frames, an image has 1"
        assert 1 <= frames <= fmt.frames, f"{where}: {what} has {frames} frames"
        lengths[entry.span] = visual.token_count(frames, fmt.height, fmt.width)
        if entry.kind == "masked_video":
            mask = cond.masks.get(entry.name)
            shape = (frames, fmt.height, fmt.width)
            assert mask is not None, f"{where}: {what} has no mask"
            assert mask.dtype == torch.bool and tuple(mask.shape) == shape, (
                f"{where}: mask of {entry.name} is {mask.dtype} {tuple(mask.shape)}, "
                f"expected bool {shape}"
            )
            assert mask.any(), f"{where}: mask of {entry.name} hides nothing"
        else:
            assert entry.name not in cond.masks, f"{where}: a mask for unmasked {entry.name}"
    if cond.audio is not None:
        need = _samples(behaviour.condition_seconds(fmt), sr)
        _check_clip(where, "the audio input", cond.audio, (need,))
        lengths["audio_in"] = audio.token_count(need / sr)
    if cond.text is not None:
        assert isinstance(cond.text, str) and cond.text.strip(), f"{where}: empty text"
    _check_media(where, spec, fmt, example.video, example.audio, sr)
    if spec.target.visual:
        frames = 1 if spec.target.visual == "image" else fmt.frames
        lengths["visual_out"] = visual.token_count(frames, fmt.height, fmt.width)
    if spec.target.audio:
        lengths["audio_out"] = audio.token_count(fmt.seconds)

    # tokens: layout, lengths, specials, ranges
    encoded = engine.encode_example(example)
    layout, tokens = encoded.layout, encoded.tokens
    _check_spans(where, spec, layout, present)
    for name, length in lengths.items():
        got = layout.span(name).length
        assert got == length, f"{where}: span {name} holds {got} ids, its media {length}"
    assert tokens.dtype == torch.long and tuple(tokens.shape) == (layout.total_length,), (
        f"{where}: tokens {tokens.dtype} {tuple(tokens.shape)}, expected ({layout.total_length},)"
    )
    fixed = torch.tensor(layout.tokens)
    special = fixed >= 0
    assert torch.equal(tokens[special], fixed[special]), f"{where}: special tokens differ"
    pad = engine.vocab.id("<pad>")
    assert (tokens[fixed == TEXT_SLOT] == pad).all(), f"{where}: text slots must hold <pad>"
    spans = _check_ids(where, layout, tokens[None])
    target = _check_ids(where, layout, tokens[None, layout.prefix_length :])
    for name, ids in target.items():
        assert torch.equal(ids, spans[name]), f"{where}: target span {name} splits differently"
    if layout.text_span is not None:
        text, mask = encoded.text, encoded.text_mask
        assert text is not None and mask is not None, f"{where}: no text embeddings"
        width = engine.text_encoder.dim
        assert text.dim() == 2 and text.shape[1] == width, f"{where}: text {tuple(text.shape)}"
        assert 1 <= text.shape[0] <= layout.text_span.length, f"{where}: text too long"
        assert tuple(mask.shape) == (text.shape[0],) and mask.any(), f"{where}: text mask off"
    else:
        assert encoded.text is None, f"{where}: text embeddings without a text span"

    # seeds: the same one gives the same tokens; draws give variety
    rng = _CountingRandom(seed)
    again = behaviour.build_example(source, fmt, rng)
    assert _fingerprint(again) == _fingerprint(example), (
        f"{where}: the same seed gave a different example (randomness outside the rng given?)"
    )
    repeat = engine.encode_example(again)
    assert torch.equal(repeat.tokens, tokens), f"{where}: the same seed gave different tokens"
    if rng.draws:
        first = _fingerprint(example)
        others = range(seed + 1, seed + variety_seeds)
        varied = any(
            _fingerprint(behaviour.build_example(source, fmt, random.Random(s))) != first
            for s in others
        )
        assert varied, (
            f"{where}: the task draws random numbers, yet seeds {seed}..{seed + variety_seeds - 1} "
            "all give the same example"
        )
    return encoded


def check_generate(
    task_name: str,
    engine: Any,
    seed: int = 0,
    *,
    inputs: dict[str, Any] | None = None,
    optional: bool = True,
    index: int = 0,
) -> Any:
    """``engine.generate`` of ``task_name`` at the engine's first format of the task's kind, from
    inputs made from world sample ``index`` (:func:`sample_inputs`; ``inputs`` adds or
    replaces some): the layout holds the given inputs' spans, the target ids are in range, the
    media have the format's frames (1 for an image), size and duration (audio: format seconds
    × sample rate), values in [-1, 1]; the same seed gives the same tokens. Returns the
    :class:`GenerationResult`."""
    behaviour = _servable(f"task {task_name}", task_name, engine)
    spec = behaviour.spec
    fmt = engine.pick_format(spec)
    where = f"task {task_name} at {fmt} (generate, seed {seed})"
    sr = _sample_rate(engine)
    given = sample_inputs(behaviour, world_source(engine, fmt, index), fmt, optional)
    given.update(inputs or {})
    lacking = [i.name for i in behaviour.inputs() if not i.optional and i.name not in given]
    assert not lacking, f"{where}: give required inputs {lacking} with inputs={{...}}"
    result = engine.generate(task_name, seed=seed, num_samples=1, **given)
    assert result.task == task_name and result.format == fmt, (
        f"{where}: the result is task {result.task} at {result.format}"
    )
    layout = result.layout
    present = {"text", "audio"} & set(given)
    present |= {e.name for e in spec.prefix.visual_inputs if behaviour.input_key(e) in given}
    _check_spans(where, spec, layout, present)
    assert tuple(result.tokens.shape) == (1, layout.target_length), (
        f"{where}: tokens {tuple(result.tokens.shape)}, expected (1, {layout.target_length})"
    )
    _check_ids(where, layout, result.tokens)
    _check_media(where, spec, fmt, result.video, result.audio, sr, batch=(1,))
    if spec.target.audio:
        assert result.sample_rate == sr, f"{where}: audio at {result.sample_rate} Hz, not {sr}"
    if spec.target.visual == "image":
        assert result.images is not None, f"{where}: an image task gave no .images"
    again = engine.generate(task_name, seed=seed, num_samples=1, **given)
    assert torch.equal(again.tokens, result.tokens), f"{where}: the same seed gave other tokens"
    return result


class TaskContractTests:
    """Subclass in a plugin's tests and set ``task_name``; pytest collects the checks.

    The behaviour checks run the task on :func:`tiny_engine` (built once per process).
    """

    task_name: str = ""
    #: inputs :func:`check_generate` cannot make from a world sample (a required number, ...)
    generate_inputs: dict[str, Any] = {}

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

    def test_builds_training_example(self) -> None:
        with _one_thread():
            check_example(self.task_name, tiny_engine())

    def test_generates_on_tiny_bundle(self) -> None:
        with _one_thread():
            check_generate(self.task_name, tiny_engine(), inputs=dict(self.generate_inputs))
