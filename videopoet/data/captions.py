"""The world's caption grammar: what happens, said in several ways.

A caption names the main object's colour and shape, its motion (clips only) and the
background, in one of several sentence frames with synonyms for shapes, verbs and the
background phrase, so text conditioning has to read the words rather than look a sentence up::

    caption := subject motion-phrase background-phrase [distractor-phrase]
             | background-phrase "," subject motion-phrase
    subject := "a"|"an" colour shape-word   (shape-word: square|box, circle|ball|disc, triangle)
    motion  := left: "moves left" | "slides to the left" | "drifts leftward" | "travels left" ...

Colour words are exactly the names in :data:`videopoet.data.world.COLORS` (the analyser's
classes); :func:`parse_caption` reads colour, shape and motion back from any caption the
grammar makes (and from simple user prompts that use the same words).
"""

from __future__ import annotations

import numpy as np

SHAPE_WORDS = {
    "square": ("square", "box"),
    "circle": ("circle", "ball", "disc"),
    "triangle": ("triangle",),
}
MOTION_PHRASES = {
    "left": ("moves left", "slides to the left", "drifts leftward", "travels left"),
    "right": ("moves right", "slides to the right", "drifts rightward", "travels right"),
    "up": ("moves up", "rises", "floats upward", "climbs"),
    "down": ("moves down", "falls", "sinks downward", "drops"),
    "bouncing": ("bounces", "is bouncing", "hops up and down", "bounces on the floor"),
    "growing": ("grows", "gets bigger", "approaches the camera", "expands"),
    "shrinking": ("shrinks", "gets smaller", "moves away from the camera", "contracts"),
    "still": ("stays still", "sits still", "does not move", "rests in place"),
}
IMAGE_PHRASES = ("", "is shown", "sits")
BACKGROUND_PHRASES = ("on a {} background", "over a {} backdrop", "against a {} background")
DISTRACTOR_PHRASES = ("", ", next to a few small shapes", ", with small shapes behind it")


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def caption(
    rng: np.random.Generator,
    color: str,
    shape: str,
    motion: str,
    background: str,
    moving: bool = True,
    distractors: int = 0,
) -> str:
    """One sentence of the grammar for this scene, drawn with ``rng``."""
    article = "an" if color[0] in "aeiou" else "a"
    subject = f"{article} {color} {_pick(rng, SHAPE_WORDS[shape])}"
    verb = _pick(rng, MOTION_PHRASES[motion] if moving else IMAGE_PHRASES)
    place = _pick(rng, BACKGROUND_PHRASES).format(background)
    extra = _pick(rng, DISTRACTOR_PHRASES) if distractors else ""
    if rng.random() < 0.25:
        return " ".join(p for p in (f"{place},", subject, verb) if p)
    return " ".join(p for p in (subject, verb, place) if p) + extra


def parse_caption(text: str) -> dict[str, str | None]:
    """Colour, shape and motion named in ``text`` (``None`` where it names none)."""
    from videopoet.data.world import BACKGROUNDS, COLORS

    lowered = " " + text.lower().replace(",", " ") + " "
    # the subject's colour is the first colour word that is not part of the background phrase
    for name in BACKGROUNDS:
        lowered = lowered.replace(f" {name} background", " ").replace(f" {name} backdrop", " ")
    found = {"color": None, "shape": None, "motion": None}
    positions = [(lowered.find(f" {c} "), c) for c in COLORS if f" {c} " in lowered]
    if positions:
        found["color"] = min(positions)[1]
    for shape, words in SHAPE_WORDS.items():
        if any(f" {w} " in lowered for w in words):
            found["shape"] = shape
    for motion, phrases in MOTION_PHRASES.items():
        if any(f" {p} " in lowered for p in phrases):
            found["motion"] = motion
            break
    return found
