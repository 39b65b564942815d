"""The tasks of the paper (4.1), registered as a videopoet plugin like any third-party task."""

from __future__ import annotations

from videopoet.core.declarations import TaskSpec
from videopoet.core.hookspecs import hookimpl
from videopoet.tasks import (
    a2v,
    avcont,
    fp,
    i2v,
    inpaint,
    outpaint,
    stylize,
    t2i,
    t2v,
    uncond,
    v2a,
)

_FAMILIES = (uncond, t2i, t2v, i2v, fp, inpaint, outpaint, stylize, a2v, v2a, avcont)


@hookimpl
def register_tasks() -> list[TaskSpec]:
    return [spec for family in _FAMILIES for spec in family.SPECS]
