"""Sequence layouts (paper Figure 3, Table 1, 4.1).

``<bos> <task> [<bot_i> text <eot_i>] [<bov_i> visual <eov_i>] [<boa_i> audio <eoa_i>]
[<res_128x224>] [<len_41>] | <bov_o> visual <eov_o> [<boa_o> audio <eoa_o>] [<eos>]``

Everything before ``|`` is the bidirectional prefix; the rest is the causal target that carries
the loss. A modality a task does not use drops its tokens and its begin/end markers.

Content positions hold tokenizer-local ids until :meth:`Layout.fill` adds each position's
vocabulary offset; :meth:`Layout.split` does the reverse.

Every position also has a place in the clip, :attr:`Layout.grid`: ``(time, row, column)``, each
counted from 1, 0 where it does not apply (special tokens and text have none, audio has no
row or column). Time is one clock for both modalities: the visual latent frame (latent ``t``
covers frames ``(t-1)·f+1 .. t·f`` of a causal tokenizer with temporal factor ``f``, latent 0
the first frame), and an audio frame gets the latent frame its middle falls in. So a
video token and the audio of the same instant share a time, and a condition clip and the
target share their grid; an LM with grid positions (``ModelConfig.grid_positions``) adds a
learned embedding of each.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from videopoet.core.declarations import FPS, MAX_TEXT_TOKENS, Format, TaskSpec
from videopoet.core.errors import ConfigError, LayoutError
from videopoet.core.vocabulary import Vocabulary, len_token, res_token

CONTENT = -1  #: a visual or audio position, filled from a tokenizer
TEXT_SLOT = -2  #: a position whose embedding is a projected text embedding


@dataclass(frozen=True)
class Span:
    """A named run of positions: one special token, the text slots, or a content block."""

    name: str
    kind: str  # "special" | "text" | "visual" | "audio"
    start: int
    length: int
    target: bool
    token: int | None = None  # the id of a special token
    shape: tuple[int, ...] = ()  # (t, h, w) for visual, (levels, frames) for audio
    #: vocabulary ranges [lo, hi), one per equal segment (one per RVQ level for audio)
    ranges: tuple[tuple[int, int], ...] = ()
    #: content spans: the clock time (from 0) of each latent frame (visual) or frame (audio)
    clock: tuple[int, ...] = ()

    @property
    def stop(self) -> int:
        return self.start + self.length


@dataclass
class Layout:
    """The token layout of one task at one format with given input lengths."""

    task: TaskSpec
    format: Format
    spans: list[Span]
    prefix_length: int
    tokens: list[int] = field(init=False)
    #: per position: the vocabulary offset added to a tokenizer-local id (0 elsewhere)
    offsets: list[int] = field(init=False)
    #: per position: allowed vocabulary range [lo, hi) of a content token, (-1, -1) elsewhere
    allowed: list[tuple[int, int]] = field(init=False)
    #: per position: its place in the clip ``(time, row, column)``, from 1; 0 = none
    grid: list[tuple[int, int, int]] = field(init=False)

    def __post_init__(self) -> None:
        self.tokens, self.offsets, self.allowed, self.grid = [], [], [], []
        for span in self.spans:
            if span.kind == "special":
                self.tokens.append(span.token)  # type: ignore[arg-type]
                self.offsets.append(0)
                self.allowed.append((-1, -1))
            elif span.kind == "text":
                self.tokens += [TEXT_SLOT] * span.length
                self.offsets += [0] * span.length
                self.allowed += [(-1, -1)] * span.length
            else:
                segment = span.length // len(span.ranges)
                for lo, hi in span.ranges:
                    self.tokens += [CONTENT] * segment
                    self.offsets += [lo] * segment
                    self.allowed += [(lo, hi)] * segment
            self.grid += _span_grid(span)

    # ------------------------------------------------------------------ views

    @property
    def total_length(self) -> int:
        return len(self.tokens)

    @property
    def target_length(self) -> int:
        return self.total_length - self.prefix_length

    @property
    def loss_mask(self) -> list[bool]:
        """True where a token is predicted and scored: every target position."""
        return [i >= self.prefix_length for i in range(self.total_length)]

    def grid_tensor(self) -> torch.Tensor:
        """:attr:`grid` as a (L, 3) long tensor, what the LM's ``grid`` argument takes."""
        return torch.tensor(self.grid, dtype=torch.long).reshape(-1, 3)

    def span(self, name: str) -> Span:
        for span in self.spans:
            if span.name == name:
                return span
        raise LayoutError(f"layout of {self.task.name} has no span {name!r}: {self.span_names}")

    def has(self, name: str) -> bool:
        return any(s.name == name for s in self.spans)

    @property
    def span_names(self) -> list[str]:
        return [s.name for s in self.spans]

    @property
    def content_spans(self) -> list[Span]:
        return [s for s in self.spans if s.kind in ("visual", "audio")]

    @property
    def text_span(self) -> Span | None:
        return next((s for s in self.spans if s.kind == "text"), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task.name,
            "format": str(self.format),
            "spans": [
                {"name": s.name, "start": s.start, "length": s.length, "target": s.target}
                | ({"shape": list(s.shape)} if s.shape else {})
                for s in self.spans
            ],
            "prefix_length": self.prefix_length,
            "total_length": self.total_length,
        }

    # ------------------------------------------------------------------ fill and split

    def fill(self, content: dict[str, torch.Tensor], text: str = "pad") -> torch.Tensor:
        """Token ids (B, L) from tokenizer-local ids per content span, each (B, span.length).

        Text slots get ``<pad>``'s id (their embeddings come from the text encoder); pass
        ``text="keep"`` to leave them at :data:`TEXT_SLOT`.
        """
        spans = self.content_spans
        missing = [s.name for s in spans if s.name not in content]
        extra = sorted(set(content) - {s.name for s in spans})
        if missing or extra:
            raise LayoutError(
                f"{self.task.name}: content for spans {[s.name for s in spans]} expected; "
                f"missing {missing}, unexpected {extra}"
            )
        batch = next(iter(content.values())).shape[0] if content else 1
        out = torch.tensor(self.tokens, dtype=torch.long).repeat(batch, 1)
        offsets = torch.tensor(self.offsets, dtype=torch.long)
        for span in spans:
            ids = torch.as_tensor(content[span.name], dtype=torch.long)
            if ids.dim() == 1:
                ids = ids.unsqueeze(0)
            if ids.shape != (batch, span.length):
                raise LayoutError(
                    f"{self.task.name}: span {span.name} takes (batch={batch}, {span.length}) "
                    f"ids, got {tuple(ids.shape)}"
                )
            sizes = [hi - lo for lo, hi in span.ranges]
            limit = min(sizes)
            if ids.numel() and (ids.min() < 0 or ids.max() >= limit):
                raise LayoutError(
                    f"{self.task.name}: span {span.name} ids must lie in [0, {limit}), got "
                    f"[{int(ids.min())}, {int(ids.max())}]"
                )
            out[:, span.start : span.stop] = ids + offsets[span.start : span.stop]
        if text == "pad":
            out[out == TEXT_SLOT] = 0  # <pad> is id 0 by construction of the vocabulary
        return out

    def split(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Tokenizer-local ids per content span, from a full sequence or from the target only.

        Accepts (L,) or (B, L); returns (B, span.length) tensors. Raises when a content token
        lies outside its span's range (a sequence that cannot be decoded).
        """
        ids = torch.as_tensor(ids, dtype=torch.long)
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        length = ids.shape[1]
        if length == self.total_length:
            shift, spans = 0, self.content_spans
        elif length == self.target_length:
            shift, spans = self.prefix_length, [s for s in self.content_spans if s.target]
        else:
            raise LayoutError(
                f"{self.task.name}: a sequence of {length} tokens is neither the whole layout "
                f"({self.total_length}) nor its target ({self.target_length})"
            )
        allowed = torch.tensor(self.allowed, dtype=torch.long)
        out = {}
        for span in spans:
            part = ids[:, span.start - shift : span.stop - shift]
            lo, hi = allowed[span.start : span.stop, 0], allowed[span.start : span.stop, 1]
            bad = (part < lo) | (part >= hi)
            if bad.any():
                position = int(bad.nonzero()[0, 1]) + span.start
                raise LayoutError(
                    f"{self.task.name}: token {int(part[bad][0])} at position {position} is "
                    f"outside span {span.name}'s range"
                )
            out[span.name] = part - lo
        return out


def _special(name: str, token: str, vocab: Vocabulary, target: bool) -> tuple:
    return (name, "special", 1, target, vocab.id(token), (), (), ())


def build_layout(
    task: TaskSpec,
    vocab: Vocabulary,
    format: Format | None = None,
    *,
    text_tokens: int | None = None,
    input_frames: int | dict[str, int] | None = None,
    audio_seconds: float | None = None,
    omit: Iterable[str] = (),
    strict_format: bool = True,
) -> Layout:
    """Build the layout of ``task`` at ``format`` (default: the task's first format).

    ``text_tokens``: text slots (default 64; 0 drops an optional text input). ``input_frames``:
    frames of a video condition (default: the input's declared frames, else the output's); an
    int sets every video input, a dict sets them by input name. ``audio_seconds``: the clip's
    audio length (default: the format's duration). ``omit``: optional inputs left out (their
    spans and markers drop). ``strict_format=False`` admits any geometry the tokenizer accepts
    (a bundle's own formats, tiny models).
    """
    fmt = format or task.formats[0]
    visual, audio = vocab.visual, vocab.audio
    prefix = task.prefix
    omitted = set(omit)
    unknown = sorted(omitted - set(prefix.input_names))
    if unknown:
        raise ConfigError("omit", unknown, f"optional inputs of {task.name}: {prefix.optional}")
    for name in sorted(omitted):
        if not prefix.is_optional(name):
            raise ConfigError("omit", name, f"an optional input of {task.name}, it is required")
    needs_visual = task.target.visual or prefix.visual
    if needs_visual and visual is None:
        raise LayoutError(f"task {task.name} needs a visual tokenizer; none is selected")
    if (task.target.audio or prefix.audio) and audio is None:
        raise LayoutError(f"task {task.name} needs an audio tokenizer; none is selected")
    out_shape = visual.latent_shape(fmt.frames, fmt.height, fmt.width) if visual else None
    if task.target.visual == "image" and fmt.frames != 1:
        raise ConfigError("frames", fmt.frames, f"1 (task {task.name} generates an image)")
    if task.target.visual == "video" and fmt.frames == 1:
        raise ConfigError("frames", fmt.frames, f"more than 1 (task {task.name} makes a video)")
    if strict_format and fmt not in task.formats:
        shown = ", ".join(str(f) for f in task.formats)
        raise LayoutError(
            f"format {fmt} (frames x height x width) is not supported by task {task.name}; "
            f"supported: {shown}"
        )
    seconds = fmt.seconds if audio_seconds is None else audio_seconds
    # the shared clock counts visual latent frames; video frames when there is no visual side
    clock_factor = visual.temporal_factor if visual is not None else 1

    rows: list[tuple] = [
        _special("bos", "<bos>", vocab, False),
        _special("task", task.token_name, vocab, False),
    ]
    if prefix.text and "text" not in omitted:
        k = MAX_TEXT_TOKENS if text_tokens is None else text_tokens
        if k > MAX_TEXT_TOKENS or k < 0:
            raise ConfigError("text_tokens", k, f"0 to {MAX_TEXT_TOKENS} text slots")
        if k == 0 and "text" not in prefix.optional:
            raise ConfigError("text_tokens", k, f"at least 1 (task {task.name} needs text)")
        if k:
            rows += [
                _special("bot_i", "<bot_i>", vocab, False),
                ("text", "text", k, False, None, (), (), ()),
                _special("eot_i", "<eot_i>", vocab, False),
            ]
    elif text_tokens and not prefix.text:
        raise ConfigError("text_tokens", text_tokens, f"0 (task {task.name} takes no text)")

    videos = [v for v in prefix.visual_inputs if v.kind != "image"]
    frames_by_name = _input_frames(task, videos, input_frames)
    for entry in prefix.visual_inputs:
        if entry.name in omitted:
            continue
        if entry.kind == "image":
            frames = 1
        else:
            frames = frames_by_name.get(entry.name) or entry.frames or fmt.frames
        if frames > fmt.frames:
            raise ConfigError(
                f"input_frames.{entry.name}", frames, f"at most the output's {fmt.frames} frames"
            )
        shape = visual.latent_shape(frames, fmt.height, fmt.width)
        book = vocab.codebook("visual")
        opener, closer = entry.markers
        ranges = ((book.start, book.stop),)
        rows += [
            _special(opener, "<bov_i>", vocab, False),
            (entry.span, "visual", _prod(shape), False, None, shape, ranges, range(shape[0])),
            _special(closer, "<eov_i>", vocab, False),
        ]

    if prefix.audio and "audio" not in omitted:
        in_seconds = prefix.condition_frames / FPS if prefix.condition_frames else seconds
        rows += [
            _special("boa_i", "<boa_i>", vocab, False),
            _audio_row("audio_in", vocab, in_seconds, False, clock_factor),
            _special("eoa_i", "<eoa_i>", vocab, False),
        ]

    if task.target.visual and fmt.frames > 1:
        for name, token in (("res", res_token(fmt)), ("len", len_token(fmt))):
            # A vocabulary built without this format (an ad-hoc geometry) does not tell it
            # apart: no token. A bundle's vocabulary holds the tokens of every format it serves.
            if token is None or token not in vocab.tokens:
                continue
            rows.append(_special(name, token, vocab, False))

    if task.target.visual:
        book = vocab.codebook("visual")
        rows += [
            _special("bov_o", "<bov_o>", vocab, True),
            (
                "visual_out",
                "visual",
                _prod(out_shape),
                True,
                None,
                out_shape,
                ((book.start, book.stop),),
                range(out_shape[0]),  # type: ignore[index]
            ),
            _special("eov_o", "<eov_o>", vocab, True),
        ]
    if task.target.audio:
        rows += [
            _special("boa_o", "<boa_o>", vocab, True),
            _audio_row("audio_out", vocab, seconds, True, clock_factor),
            _special("eoa_o", "<eoa_o>", vocab, True),
        ]
    if task.eos:
        rows.append(_special("eos", "<eos>", vocab, True))

    spans, start = [], 0
    for name, kind, length, target, token, shape, ranges, clock in rows:
        spans.append(
            Span(name, kind, start, length, target, token, tuple(shape), ranges, tuple(clock))
        )
        start += length
    prefix_length = next(s.start for s in spans if s.target)
    return Layout(task, fmt, spans, prefix_length)


def _input_frames(task: TaskSpec, videos: list, given: int | dict[str, int] | None) -> dict:
    if given is None:
        return {}
    if not videos:
        raise ConfigError("input_frames", given, f"none (task {task.name} takes no video)")
    if isinstance(given, int):
        return {v.name: given for v in videos}
    unknown = sorted(set(given) - {v.name for v in videos})
    if unknown:
        raise ConfigError("input_frames", unknown, f"video inputs of {task.name}")
    return dict(given)


def _audio_row(
    name: str, vocab: Vocabulary, seconds: float, target: bool, clock_factor: int
) -> tuple:
    spec = vocab.audio
    frames = spec.latent_frames(seconds)  # type: ignore[union-attr]
    books = vocab.codebooks_of("audio")
    ranges = tuple((b.start, b.stop) for b in books)
    clock = [
        audio_clock((k + 0.5) / spec.frame_rate, clock_factor)  # type: ignore[union-attr]
        for k in range(frames)
    ]
    shape = (len(books), frames)
    return (name, "audio", frames * len(books), target, None, shape, ranges, clock)


def audio_clock(seconds: float, clock_factor: int) -> int:
    """The clock time of an instant: the visual latent frame that holds its video frame."""
    frame = math.floor(seconds * FPS + 1e-9)
    return -(-frame // clock_factor)


def _span_grid(span: Span) -> list[tuple[int, int, int]]:
    if span.kind == "visual" and span.clock:
        t, h, w = span.shape
        return [
            (span.clock[i] + 1, r + 1, c + 1) for i in range(t) for r in range(h) for c in range(w)
        ]
    if span.kind == "audio" and span.clock:
        levels = span.shape[0]
        return [(time + 1, 0, 0) for _ in range(levels) for time in span.clock]
    return [(0, 0, 0)] * span.length


def _prod(shape: tuple[int, ...] | None) -> int:
    total = 1
    for n in shape or ():
        total *= n
    return total
