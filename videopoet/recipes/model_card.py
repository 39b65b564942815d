"""MODEL_CARD.md for a bundle made by a recipe of stages: how it was made (the command, the
recipe's parameters and seed, each stage's wall time), on what machine, what it holds and the
figures ``videopoet evaluate`` measured."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

CARD_NAME = "MODEL_CARD.md"


def machine() -> dict[str, Any]:
    """The machine a stage runs on, as the card shows it."""
    import torch

    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def duration(seconds: float) -> str:
    """``42 s``, ``7 min 05 s``, ``2 h 31 min``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def render_card(
    bundle: Path, evaluation: dict[str, Any] | None, run: Any, title: str | None = None
) -> str:
    """The card's Markdown; ``run`` is the :class:`~videopoet.recipes.stage_work.RunInfo`."""
    from videopoet import __version__
    from videopoet.core.engine import Engine

    engine = Engine.from_pretrained(bundle)  # it loads: the card describes a working bundle
    params = run.parameters
    lines = [f"# {title or run.recipe}", ""]
    lines += [
        f"Made by the recipe `{run.recipe}` ({run.source}) with videopoet {__version__}.",
        "",
        "## How it was made",
        "",
        "```console",
        run.command,
        "```",
        "",
        "Running the same command again skips the finished stages and resumes an interrupted "
        "one; `--force` starts every stage over.",
        "",
    ]
    if "seed" in params:
        lines += [f"Seed: {params['seed']}.", ""]
    if params:
        lines += ["| parameter | value |", "|---|---|"]
        lines += [f"| {key} | {_value(value)} |" for key, value in params.items()]
        lines.append("")
    lines += _stages(run.records)
    lines += _machines(run.records)
    lines += _contents(engine)
    if evaluation is not None:
        lines += _figures(evaluation)
    return "\n".join(lines).rstrip() + "\n"


def _stages(records: list[dict[str, Any]]) -> list[str]:
    from videopoet.recipes.stages import STAGES

    lines = ["## Stages", "", "| step | stage | runs | wall time |", "|---|---|---|---|"]
    total = 0.0
    for record in records:
        spec = STAGES.get(record.get("stage", ""))
        seconds = float(record.get("seconds", 0.0))
        total += seconds
        what = f"{record.get('stage')} (`{spec.command}`)" if spec else str(record.get("stage"))
        runs = record.get("attempts", 1)
        lines.append(f"| {record['name']} | {what} | {runs} | {duration(seconds)} |")
    lines += [f"| **total** | | | **{duration(total)}** |", ""]
    lines += [
        "Wall time is each stage's own, summed over the runs that continued it (a training "
        "resumed from its checkpoints); the time between runs is not counted.",
        "",
    ]
    return lines


def _machines(records: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, list[str]] = {}
    for record in records:
        info = record.get("machine") or machine()
        text = (  # not the threads: each training config sets its own
            f"{info.get('cpus')} CPU cores ({info.get('processor')}), {info.get('platform')}; "
            f"Python {info.get('python')}, torch {info.get('torch')}"
        )
        if info.get("gpu"):
            text += f"; GPU {info['gpu']}"
        seen.setdefault(text, []).append(record["name"])
    lines = ["## Machine", ""]
    if len(seen) == 1:
        lines += [f"- {next(iter(seen))}", ""]
    else:
        lines += [f"- {text} (steps {', '.join(names)})" for text, names in seen.items()]
        lines.append("")
    return lines


def _contents(engine: Any) -> list[str]:
    record = engine.text_record
    refiners = ", ".join(
        f"{name} ({getattr(r, 'scale', '?')}x)" for name, r in engine.refiners.items()
    )
    return [
        "## What it holds",
        "",
        f"- prefix LM: {engine.lm.num_parameters():,} parameters, vocabulary "
        f"{engine.vocab.size:,}, context {engine.lm.config.max_seq_len:,}",
        f"- formats: {', '.join(str(f) for f in engine.formats)}",
        f"- visual tokenizer: {engine.visual_spec.name if engine.visual is not None else 'none'}; "
        f"audio tokenizer: {engine.audio_spec.name if engine.audio is not None else 'none'}",
        f"- text encoder: {record.name if record else 'none'}"
        + (f" ({record.identity})" if record else ""),
        f"- refiners: {refiners or 'none'}",
        f"- sampling defaults (bundle.json `generation`): {_generation(engine)}",
        "",
    ]


def _generation(engine: Any) -> str:
    defaults = getattr(engine, "generation", None)
    if defaults is None:
        return "none (guidance off, temperature 1)"
    data = defaults.model_dump(mode="json")
    tasks = data.pop("tasks", {})
    shown = ", ".join(f"{k} {v}" for k, v in data.items() if v is not None)
    for task, given in tasks.items():
        shown += f"; {task}: " + ", ".join(f"{k} {v}" for k, v in given.items())
    return shown


def _figures(evaluation: dict[str, Any]) -> list[str]:
    from videopoet.data.evaluation import FIGURES, SUPERRES_FIGURES

    known = FIGURES | SUPERRES_FIGURES | {"t2v_fvd": ("t2v", "Fréchet distance (lower is better)")}
    untrained = evaluation.get("untrained") or {}
    sampling = evaluation.get("sampling") or {}
    if all(isinstance(v, dict) for v in sampling.values()):  # task -> settings
        from videopoet.core.generation_config import describe_sampling

        shown = describe_sampling(sampling)
    else:  # an evaluation.json of an older version: one set for every task
        shown = ", ".join(f"{k} {v}" for k, v in sampling.items() if v is not None)
    lines = [
        "## Measured",
        "",
        f"`videopoet evaluate --seeds {evaluation.get('seeds')}`: held-out world samples at "
        f"{evaluation.get('format')} ({shown})"
        + (", beside the same bundle with an untrained LM" if untrained else "")
        + ". The whole output is the evaluate stage's `evaluation.json`.",
        "",
    ]
    lines += (
        ["| figure | bundle | untrained | what |", "|---|---|---|---|"]
        if untrained
        else ["| figure | bundle | what |", "|---|---|---|"]
    )
    for key, (_, what) in known.items():
        if evaluation.get(key) is None and untrained.get(key) is None:
            continue
        cells = [key, _value(evaluation.get(key))]
        cells += [_value(untrained.get(key))] if untrained else []
        lines.append(f"| {' | '.join(cells)} | {what} |")
    for task, why in (evaluation.get("skipped") or {}).items():
        lines.append(f"\nNot measured: {task} ({why}).")
    lines.append("")
    return lines
