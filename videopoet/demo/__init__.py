"""`videopoet demo`: every task of the paper on held-out world samples, as an HTML gallery.

- :mod:`~videopoet.demo.cases`: what each task's case gives the model and measures;
- :mod:`~videopoet.demo.runner`: :func:`run_demo` runs the cases with a bundle and its
  untrained twin and writes the gallery folder;
- :mod:`~videopoet.demo.gallery`: the HTML page; :mod:`~videopoet.demo.views`: filmstrips and
  other pictures; :mod:`~videopoet.demo.browser`: checks a gallery in headless Chromium.

Heavy imports (torch, the engine) happen inside these modules, not here.
"""

from __future__ import annotations

from typing import Any


def run_demo(*args: Any, **kwargs: Any) -> Any:
    """See :func:`videopoet.demo.runner.run_demo`."""
    from videopoet.demo.runner import run_demo as run

    return run(*args, **kwargs)


__all__ = ["run_demo"]
