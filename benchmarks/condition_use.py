"""Does the LM use its condition? Teacher-forced loss with each example's own prefix against
the prefix of another clip.

For each conditioned task, held-out world examples are encoded as the trainer sees them
(optional inputs left out, so every example of a task has one layout). The target's
cross-entropy is measured twice: with the example's own condition spans (``visual_in``,
``audio_in``, ...) and with those of the next example. A model that reads its condition loses
more with the wrong one; a model that ignores it does not. The first latent frame of a video
target is shown apart: later frames can also be copied from the frames before them, the first
only from the condition.

Text-to-video is probed apart (``--motion``, on by default): does the LM read the caption's
*motion* words? Each held-out t2v clip's target is scored per latent frame with its caption as
it is and with its motion phrase swapped for the opposite motion's ("moves left" -> "moves
right", "grows" -> "shrinks", "stays still" -> "bounces"). The first latent frame is frame 0
alone; the motion shows from latent frame 1 on, where an LM that follows the words loses more
with the wrong ones. The last line is one JSON object.

    python benchmarks/condition_use.py checkpoints/videopoet_tiny_world [--examples 16]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from videopoet.core.engine import Engine
from videopoet.data.captions import MOTION_PHRASES
from videopoet.data.world import EVAL_OFFSET, sample

TASKS = ("i2v", "fp", "inpaint", "outpaint", "stylize", "a2v", "v2a")
#: the motion each motion's phrases are swapped for (the same phrase slot of the opposite)
OPPOSITE = {
    "left": "right",
    "right": "left",
    "up": "down",
    "down": "up",
    "growing": "shrinking",
    "shrinking": "growing",
    "still": "bouncing",
    "bouncing": "still",
}


def condition_spans(layout: Any) -> list[Any]:
    """The prefix spans that carry a condition's content (not text, not single markers)."""
    return [s for s in layout.spans if not s.target and s.length > 1 and s.name != "text"]


def encoded(engine: Engine, task: str, count: int) -> list[Any]:
    behaviour = engine.task(task)
    fmt = next(f for f in engine.formats if not f.is_image)
    kind = type(behaviour)
    before = kind.optional_drop
    kind.optional_drop = 1.0  # one layout per task: optional inputs left out
    try:
        out = []
        for i in range(count):
            item = sample(EVAL_OFFSET + i, fmt.frames, fmt.height, fmt.width)
            out.append(engine.encode_example(engine.build_example(task, item, fmt, seed=i)))
        return out
    finally:
        kind.optional_drop = before


def _target_ce(engine: Engine, example: Any, tokens: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each target token of ``example`` laid out as ``tokens``."""
    layout = example.layout
    prefix = layout.prefix_length
    text = None if example.text is None else example.text[None]
    mask = None if example.text_mask is None else example.text_mask[None]
    start = layout.span("text").start if layout.has("text") else None
    with torch.no_grad():
        logits = engine.lm(
            tokens[None], prefix, text, mask, text_start=start, grid=layout.grid_tensor()[None]
        )[0]
    return torch.nn.functional.cross_entropy(
        logits[prefix - 1 : -1].float(), tokens[prefix:], reduction="none"
    )


def target_losses(engine: Engine, example: Any, tokens: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy of the whole target and of its first latent frame (or the whole
    target when it is not a video)."""
    ce = _target_ce(engine, example, tokens)
    if example.layout.has("visual_out"):
        first = frame_losses(engine, example, ce)[0]
        return float(ce.mean()), first
    return float(ce.mean()), float(ce.mean())


def swap_motion(caption: str, motion: str) -> str | None:
    """``caption`` with its phrase of ``motion`` replaced by the opposite motion's phrase in the
    same slot; None if no phrase of ``motion`` is in it."""
    phrases = MOTION_PHRASES[motion]
    # longest first: "bounces" is inside "bounces on the floor"
    for slot in sorted(range(len(phrases)), key=lambda k: -len(phrases[k])):
        if phrases[slot] in caption:
            return caption.replace(phrases[slot], MOTION_PHRASES[OPPOSITE[motion]][slot])
    return None


def frame_losses(engine: Engine, example: Any, ce: torch.Tensor | None = None) -> list[float]:
    """Mean cross-entropy of each latent frame of a video target (``ce``: the target's
    per-token cross-entropy, when already computed)."""
    ce = _target_ce(engine, example, example.tokens) if ce is None else ce
    span = example.layout.span("visual_out")
    per = span.shape[1] * span.shape[2] if len(span.shape) == 3 else span.length
    lo = span.start - example.layout.prefix_length
    frames = span.shape[0] if len(span.shape) == 3 else 1
    return [float(ce[lo + f * per : lo + (f + 1) * per].mean()) for f in range(frames)]


def motion_words(engine: Engine, count: int, first: int = 0) -> dict[str, list[float]]:
    """Per-latent-frame t2v loss, own caption vs the opposite motion's, on ``count`` held-out
    clips from index ``EVAL_OFFSET + first`` (clips whose caption names no motion are passed)."""
    import dataclasses

    fmt = next(f for f in engine.formats if not f.is_image)
    kind = type(engine.task("t2v"))
    before = kind.optional_drop
    kind.optional_drop = 1.0
    own, swapped = [], []
    try:
        for i in range(first, first + count * 4):
            item = sample(EVAL_OFFSET + i, fmt.frames, fmt.height, fmt.width)
            other = swap_motion(item.caption, item.motion)
            if other is None:
                continue
            for caption, rows in ((item.caption, own), (other, swapped)):
                clip = dataclasses.replace(item, caption=caption)
                example = engine.encode_example(engine.build_example("t2v", clip, fmt, seed=i))
                rows.append(frame_losses(engine, example))
            if len(own) == count:
                break
    finally:
        kind.optional_drop = before
    mean = [[round(sum(c) / len(c), 4) for c in zip(*rows, strict=True)] for rows in (own, swapped)]
    return {"clips": len(own), "own": mean[0], "swapped": mean[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--motion",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="probe the t2v motion words (own caption vs the opposite motion's)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    engine = Engine.from_pretrained(args.bundle)
    figures: dict[str, Any] = {"bundle": args.bundle, "examples": args.examples}
    print(f"{args.bundle}: target cross-entropy (nats/token), own condition vs another clip's")
    print(f"{'task':9} {'own':>7} {'other':>7} {'first frame own':>16} {'other':>7}")
    for task in args.tasks.split(","):
        if task not in engine.tasks():
            continue
        examples = encoded(engine, task, args.examples)
        rows = []
        for k, example in enumerate(examples):
            other = examples[(k + 1) % len(examples)]
            swapped = example.tokens.clone()
            for span in condition_spans(example.layout):
                swapped[span.start : span.start + span.length] = other.tokens[
                    span.start : span.start + span.length
                ]
            rows.append(
                target_losses(engine, example, example.tokens)
                + target_losses(engine, example, swapped)
            )
        own, own_first, other, other_first = (sum(c) / len(rows) for c in zip(*rows, strict=True))
        print(f"{task:9} {own:7.3f} {other:7.3f} {own_first:16.3f} {other_first:7.3f}")
        figures[task] = {
            "own": round(own, 4),
            "other": round(other, 4),
            "first_own": round(own_first, 4),
            "first_other": round(other_first, 4),
        }
    if args.motion and "t2v" in engine.tasks():
        probe = motion_words(engine, args.examples)
        frames = len(probe["own"])
        print(f"t2v motion words, {probe['clips']} clips: loss per latent frame 0 … {frames - 1}")
        for name in ("own", "swapped"):
            print(f"  {name:8} " + " ".join(f"{v:6.3f}" for v in probe[name]))
        figures["t2v_motion"] = probe
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
