"""The demo's gallery: one static HTML page beside its media (no script, no network).

Each case is a row: its inputs, the bundle's output, and the reference's (the untrained LM's,
or bicubic for super-resolution) on the same inputs, then the progressive preview as a
filmstrip and the case's figures. Media paths are relative, so the folder can be moved,
zipped or served as it is.
"""

from __future__ import annotations

import datetime
import html
from pathlib import Path
from typing import Any

from videopoet.core.serialization import atomic_write

#: display height of clips and images (CSS pixels): the tiny formats are 64 px high
DISPLAY = 192

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1280px; padding: 16px;
       color: #1d1d1f; background: #fafafa; }
h1 { margin: 0 0 4px; } h2 { margin: 0 0 4px; font-size: 20px; }
.meta, .about, figcaption, .note { color: #555; }
.tasks { font: 13px ui-monospace, monospace; background: #e8e8ed; border-radius: 4px;
         padding: 1px 6px; vertical-align: middle; }
section.case { background: #fff; border: 1px solid #ddd; border-radius: 8px; padding: 14px 16px;
               margin: 18px 0; }
.row { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.col { flex: 0 1 auto; min-width: 200px; }
.items { display: flex; flex-wrap: wrap; gap: 4px 12px; align-items: flex-start; }
.col h3 { margin: 6px 0; font-size: 13px; text-transform: uppercase; letter-spacing: .05em;
          color: #777; }
.col.bundle h3 { color: #0a6a2f; }
figure { margin: 0 0 10px; }
video, img.media { image-rendering: pixelated; background: #222; display: block;
                   max-width: 100%; height: auto; }
audio { width: 260px; display: block; }
blockquote.prompt { margin: 0; padding: 6px 10px; border-left: 3px solid #888; background: #f3f3f3;
                    max-width: 280px; font-style: italic; }
figure.filmstrip img { width: 100%; max-width: 720px; height: auto; }
table { border-collapse: collapse; margin-top: 6px; }
td, th { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ahead { color: #0a6a2f; font-weight: 600; }
.skipped { color: #8a5a00; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def shown_path(path: str | Path) -> str:
    """``path`` relative to the current directory when it lies under it (the gallery's header
    then reads ``checkpoints/videopoet_tiny_world``, not where this checkout happens to be),
    else as given."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except (OSError, ValueError):
        return str(path)


def ahead(fig: dict) -> bool | None:
    """Whether the bundle's value beats the reference's (None if either is missing)."""
    ours, theirs = fig.get("bundle"), fig.get("reference")
    if ours is None or theirs is None:
        return None
    return ours > theirs if fig["better"] == "higher" else ours < theirs


def _size(record: dict) -> str:
    width, height = record.get("width"), record.get("height")
    if not width or not height:
        return ""
    scale = max(1, round(DISPLAY / min(height, 64))) if height <= 64 else DISPLAY / height
    return f' width="{round(width * scale)}" height="{round(height * scale)}"'


def medium(record: dict) -> str:
    """One input or output as HTML."""
    label, kind = _e(record["label"]), record["kind"]
    if kind == "text":
        return (
            f'<figure><blockquote class="prompt">{_e(record["text"])}</blockquote>'
            f"<figcaption>{label}</figcaption></figure>"
        )
    src = _e(record["path"])
    if kind == "audio":
        return (
            f'<figure><audio controls preload="auto" src="{src}"></audio>'
            f"<figcaption>{label}</figcaption></figure>"
        )
    if kind == "image":
        return (
            f'<figure><img class="media" src="{src}" alt="{label}"{_size(record)}>'
            f"<figcaption>{label}</figcaption></figure>"
        )
    sound = record.get("sound")
    # silent clips play by themselves; a clip with sound waits for the viewer to press play
    play = "" if sound else " autoplay muted"
    note = f"{record.get('frames', '?')} frames" + (", with sound" if sound else "")
    return (
        f'<figure><video controls loop playsinline preload="auto"{play} src="{src}"'
        f"{_size(record)}></video><figcaption>{label} <small>({_e(note)})</small>"
        "</figcaption></figure>"
    )


def _figures_table(entry: Any) -> str:
    if not entry.figures:
        return ""
    head = (
        f"<tr><th>figure</th><th>bundle</th><th>{_e(entry.reference)}</th><th></th>"
        "<th>samples</th></tr>"
    )
    rows = []
    for fig in entry.figures:
        mark = {True: '<span class="ahead">bundle ahead</span>', False: "", None: ""}[ahead(fig)]
        better = "higher is better" if fig["better"] == "higher" else "lower is better"
        rows.append(
            f'<tr><td>{_e(fig["label"])} <small class="note">({better})</small></td>'
            f'<td class="num">{_num(fig["bundle"])}</td>'
            f'<td class="num">{_num(fig["reference"])}</td><td>{mark}</td>'
            f'<td class="num">{fig["measured"]}/{fig["samples"]}</td></tr>'
        )
    return f"<table>{head}{''.join(rows)}</table>"


def section(entry: Any) -> str:
    """One case as an HTML section."""
    tasks = " ".join(f'<span class="tasks">{_e(t)}</span>' for t in entry.tasks)
    parts = [
        f'<section class="case" id="{_e(entry.key)}">',
        f"<h2>{_e(entry.title)} {tasks}</h2>",
        f'<p class="about">{_e(entry.about)}</p>',
    ]
    if entry.skipped:
        parts.append(f'<p class="skipped">Not shown: {_e(entry.skipped)}.</p></section>')
        return "\n".join(parts)
    columns = [("inputs", "inputs", entry.inputs), ("bundle", "bundle", entry.outputs)]
    if entry.reference_outputs:
        columns.append(("reference", entry.reference, entry.reference_outputs))
    parts.append('<div class="row">')
    for css, title, records in columns:
        body = "".join(medium(r) for r in records) or '<p class="note">(none)</p>'
        parts.append(
            f'<div class="col {css}"><h3>{_e(title)}</h3><div class="items">{body}</div></div>'
        )
    parts.append("</div>")
    if entry.filmstrip:
        parts.append(
            f'<figure class="filmstrip"><img class="media" src="{_e(entry.filmstrip)}" '
            'alt="progressive preview"><figcaption>Progressive preview of the bundle\'s output: '
            "row <i>k</i> holds the frames decoded once <i>k</i> latent frames were sampled "
            "(the tokenizer is causal, so they are already final).</figcaption></figure>"
        )
    parts.append(_figures_table(entry))
    parts.append("</section>")
    return "\n".join(parts)


def summary(report: Any) -> str:
    rows = []
    for entry in report.entries:
        link = f'<a href="#{_e(entry.key)}">{_e(entry.title)}</a>'
        if entry.skipped:
            rows.append(f'<tr><td>{link}</td><td colspan="4" class="skipped">not shown</td></tr>')
            continue
        for fig in entry.figures:
            mark = "bundle ahead" if ahead(fig) else ""
            rows.append(
                f"<tr><td>{link}</td><td>{_e(fig['label'])}</td>"
                f'<td class="num">{_num(fig["bundle"])}</td>'
                f'<td class="num">{_num(fig["reference"])} <small class="note">'
                f"{_e(entry.reference)}</small></td>"
                f'<td class="ahead">{mark}</td></tr>'
            )
            link = ""
    head = "<tr><th>case</th><th>figure</th><th>bundle</th><th>reference</th><th></th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def render(report: Any) -> str:
    """The whole page."""
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    reference = (
        "an <b>untrained LM</b> of the same config (same tokenizers and text encoder) on the "
        "same inputs and sampling seeds: what each figure is by chance"
        if report.untrained
        else "nothing (run without the untrained reference)"
    )
    sampling = ", ".join(f"{k}={v}" for k, v in report.sampling.items() if v is not None)
    defaults = getattr(report, "generation", None)
    if defaults:
        shown = ", ".join(f"{k}={v}" for k, v in defaults.items() if v not in (None, {}))
        sampling = f"{sampling} over " if sampling else ""
        sampling += f"the bundle's defaults ({shown})"
    bundle = shown_path(report.bundle)
    meta = (
        f"Bundle <code>{_e(bundle)}</code>"
        + (f" ({_e(report.description)})" if report.description else "")
        + f", {report.parameters / 1e6:.2f} M LM parameters, formats "
        f"{_e(', '.join(report.formats))}. Seed {report.seed}; {report.samples} held-out "
        f"sample{'s' if report.samples > 1 else ''} per case"
        + (" (--quick)" if report.quick else "")
        + (f"; sampling {_e(sampling)}" if sampling else "")
        + f"; {report.seconds:.0f} s; {when}."
    )
    body = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>VideoPoet demo</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>VideoPoet demo</h1>",
        f'<p class="meta">{meta}</p>',
        *(f'<p class="skipped">{_e(note)}</p>' for note in report.notes),
        "<p>Every case draws its inputs from <b>held-out samples of the built-in synthetic "
        "world</b> (flat-coloured shapes that move, with a sound that follows them; never "
        "seen in training). Each row shows the inputs, the bundle's output and, for "
        f"reference, {reference}. The figures are measured by the world's analyser (no "
        "pretrained network) and averaged over the case's samples; the first sample is "
        'shown. <a href="#figures">All figures</a> are at the end; raw: '
        '<a href="demo.json">demo.json</a>.</p>',
        *(section(entry) for entry in report.entries),
        '<h2 id="figures">All figures</h2>',
        summary(report),
        f'<p class="note">Made by <code>videopoet demo --bundle {_e(bundle)} --seed '
        f"{report.seed}{' --quick' if report.quick else ''}</code>.</p>",
        "</body></html>",
    ]
    return "\n".join(body) + "\n"


def write_gallery(path: str | Path, report: Any) -> Path:
    """Write ``index.html`` atomically."""
    atomic_write(path, render(report))
    return Path(path)
