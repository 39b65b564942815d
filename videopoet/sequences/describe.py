"""Human-readable views of layouts, for `videopoet layout` and the docs."""

from __future__ import annotations

from typing import Any

from videopoet.sequences.layout import Layout


def layout_table(layout: Layout, vocab: Any = None) -> str:
    """A table of spans (name, start, length, role, latent shape or, given the vocabulary,
    the special token a one-token span holds) and the totals."""
    rows = [("span", "start", "length", "role", "shape/token")]
    for span in layout.spans:
        role = "target" if span.target else "prefix"
        shape = "x".join(str(n) for n in span.shape) if span.shape else ""
        if span.kind == "special" and vocab is not None:
            shape = vocab.name(span.token)
        rows.append((span.name, str(span.start), str(span.length), role, shape))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.rjust(w) if i in (1, 2) else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    task = layout.task
    lines.insert(0, f"task {task.name} ({task.description}), format {layout.format}")
    lines.append(
        f"prefix_length {layout.prefix_length}  target_length {layout.target_length}  "
        f"total_length {layout.total_length}"
    )
    return "\n".join(lines)
