"""The unified vocabulary (paper 3.1).

``[0, 256)`` holds special, task and format tokens allocated by name; then each discrete
tokenizer's codebook follows in a fixed order, visual first, then audio with one disjoint range
per RVQ level. With the defaults: visual ``[256, 262400)``, audio ``[262400, 266496)``.

The name→id table is saved with every checkpoint. A table given as ``base`` keeps every id it
has (new names take free ids), so an installed plugin can never shift a trained model's ids.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from videopoet.core.declarations import AudioTokenizerSpec, Format, TaskSpec, VisualTokenizerSpec
from videopoet.core.errors import UnknownNameError, VocabularyError

RESERVED = 256

#: Table 1 of the paper, plus <pad>. ``<task>`` and ``<res>`` are families, named below.
SPECIAL_TOKENS = (
    "<pad>",
    "<bos>",
    "<bot_i>",
    "<eot_i>",
    "<bov_i>",
    "<eov_i>",
    "<boa_i>",
    "<eoa_i>",
    "<bov_o>",
    "<eov_o>",
    "<boa_o>",
    "<eoa_o>",
    "<eos>",
)

#: Format tokens (4.1): resolution only for the 128×224 portrait output, length only for 41
#: frames; 128×128 and 17 frames are assumed otherwise.
RES_PORTRAIT = "<res_128x224>"
LEN_LONG = "<len_41>"
FORMAT_TOKENS = (RES_PORTRAIT, LEN_LONG)
#: The size and length every video is assumed to have unless a format token says otherwise.
DEFAULT_SIZE, DEFAULT_FRAMES = (128, 128), 17


def res_token(fmt: Format) -> str | None:
    """The resolution token of a video format (width x height), None at 128x128."""
    if fmt.frames == 1 or (fmt.height, fmt.width) == DEFAULT_SIZE:
        return None
    return f"<res_{fmt.width}x{fmt.height}>"


def len_token(fmt: Format) -> str | None:
    """The length token of a video format, None at 17 frames (and for images)."""
    if fmt.frames in (1, DEFAULT_FRAMES):
        return None
    return f"<len_{fmt.frames}>"


def format_tokens(formats: Iterable[Format]) -> list[str]:
    """The format tokens a set of formats needs, beyond the paper's two."""
    names = [t for f in formats for t in (res_token(f), len_token(f)) if t is not None]
    return [t for t in dict.fromkeys(names) if t not in FORMAT_TOKENS]


@dataclass(frozen=True)
class Codebook:
    """One contiguous id range of one tokenizer (one RVQ level for audio)."""

    tokenizer: str
    modality: str
    level: int
    start: int
    size: int

    @property
    def stop(self) -> int:
        return self.start + self.size


class Vocabulary:
    """Name→id table of the reserved tokens and the codebook ranges after them."""

    def __init__(
        self,
        tasks: Iterable[TaskSpec],
        visual: VisualTokenizerSpec | None,
        audio: AudioTokenizerSpec | None,
        base: dict[str, Any] | None = None,
        formats: Iterable[Format] = (),
    ) -> None:
        self.visual, self.audio = visual, audio
        wanted = [*SPECIAL_TOKENS, *FORMAT_TOKENS]
        wanted += list(dict.fromkeys(task.token_name for task in tasks))
        wanted += format_tokens(formats)  # after the tasks: a new format never moves a task id
        self.tokens: dict[str, int] = {}
        if base is not None:
            self.tokens.update(_check_base_tokens(base))
        free = (i for i in range(RESERVED) if i not in set(self.tokens.values()))
        for name in wanted:
            if name not in self.tokens:
                try:
                    self.tokens[name] = next(free)
                except StopIteration:
                    raise VocabularyError(
                        f"the {RESERVED} reserved ids are used up: cannot allocate {name!r} "
                        f"({len(self.tokens)} names already, e.g. {sorted(self.tokens)[-3:]})"
                    ) from None
        self._names = {i: n for n, i in self.tokens.items()}
        self.codebooks: list[Codebook] = []
        start = RESERVED
        for spec in (visual, audio):
            if spec is None:
                continue
            for level, size in enumerate(spec.codebook_sizes):
                self.codebooks.append(Codebook(spec.name, spec.modality, level, start, size))
                start += size
        self.size = start
        if base is not None:
            _check_base_codebooks(base, self)

    @classmethod
    def from_registry(
        cls,
        registry: Any,
        visual: str | None = None,
        audio: str | None = None,
        base: dict[str, Any] | None = None,
        audio_spec: AudioTokenizerSpec | None = None,
        formats: Iterable[Format] = (),
    ) -> Vocabulary:
        """The vocabulary of every registered task and the chosen (or default) tokenizers.

        Built-in task tokens come first, then third-party ones, each group sorted by name, so
        installing a plugin never moves a built-in id. ``audio_spec`` replaces the registered
        audio tokenizer (e.g. one read from a checkpoint file).
        """

        def order(task: TaskSpec) -> tuple[bool, str]:
            owner = registry.owners.get(("tasks", task.name))
            return (getattr(owner, "distribution", "") != "videopoet", task.token_name)

        return cls(
            sorted(registry.tasks.values(), key=order),
            registry.tokenizer_for("visual", visual),
            audio_spec or registry.tokenizer_for("audio", audio),
            base=base,
            formats=formats,
        )

    # ------------------------------------------------------------------ look-ups

    def id(self, name: str) -> int:
        if name not in self.tokens:
            raise UnknownNameError("token", name, list(self.tokens))
        return self.tokens[name]

    def name(self, token_id: int) -> str:
        if token_id in self._names:
            return self._names[token_id]
        for book in self.codebooks:
            if book.start <= token_id < book.stop:
                return f"{book.modality}[{book.level}]:{token_id - book.start}"
        if 0 <= token_id < RESERVED:
            return f"<unused_{token_id}>"
        raise VocabularyError(f"token id {token_id} is outside the vocabulary [0, {self.size})")

    def codebook(self, modality: str, level: int = 0) -> Codebook:
        for book in self.codebooks:
            if book.modality == modality and book.level == level:
                return book
        have = [(b.modality, b.level) for b in self.codebooks]
        raise VocabularyError(f"no {modality} codebook of level {level} (have {have})")

    def codebooks_of(self, modality: str) -> list[Codebook]:
        return [b for b in self.codebooks if b.modality == modality]

    @property
    def special_ids(self) -> dict[str, int]:
        return dict(self.tokens)

    # ------------------------------------------------------------------ serialization

    def to_dict(self) -> dict[str, Any]:
        return {
            "reserved": RESERVED,
            "tokens": dict(sorted(self.tokens.items(), key=lambda kv: kv[1])),
            "codebooks": [asdict(b) for b in self.codebooks],
            "size": self.size,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(
        cls,
        table: dict[str, Any],
        tasks: Iterable[TaskSpec],
        visual: VisualTokenizerSpec | None,
        audio: AudioTokenizerSpec | None,
    ) -> Vocabulary:
        """Rebuild a saved table against the installed plugins; a conflict is an error."""
        return cls(tasks, visual, audio, base=table)


def _check_base_tokens(base: dict[str, Any]) -> dict[str, int]:
    if base.get("reserved", RESERVED) != RESERVED:
        raise VocabularyError(
            f"saved table reserves {base.get('reserved')} ids, this version reserves {RESERVED}"
        )
    tokens = {str(k): int(v) for k, v in dict(base.get("tokens", {})).items()}
    seen: dict[int, str] = {}
    for name, token_id in tokens.items():
        if not 0 <= token_id < RESERVED:
            raise VocabularyError(
                f"saved token {name!r} has id {token_id}, outside [0, {RESERVED})"
            )
        if token_id in seen:
            raise VocabularyError(
                f"saved tokens {seen[token_id]!r} and {name!r} share id {token_id}"
            )
        seen[token_id] = name
    return tokens


def _check_base_codebooks(base: dict[str, Any], vocab: Vocabulary) -> None:
    saved = [Codebook(**b) for b in base.get("codebooks", [])]
    if saved != vocab.codebooks:

        def show(books: list[Codebook]) -> str:
            return (
                ", ".join(f"{b.tokenizer}[{b.level}]@[{b.start},{b.stop})" for b in books) or "none"
            )

        raise VocabularyError(
            "the saved token table conflicts with the installed tokenizers: saved "
            f"{show(saved)}; installed {show(vocab.codebooks)}. Install the tokenizer plugins "
            "the checkpoint was trained with, or choose them by name."
        )
