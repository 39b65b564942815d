"""`videopoet evaluate BUNDLE`: argument parsing and printing over
:func:`videopoet.data.evaluation.evaluate` (docs/evaluation.md).

Wired into ``videopoet`` by ``add_parsers``; ``python -m videopoet.cli_evaluate BUNDLE ...``
runs it alone.
"""

from __future__ import annotations

import argparse
import json
import sys


def _tasks(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    return names or None


def cmd_evaluate(args: argparse.Namespace) -> int:
    from videopoet.core.bundle import read_bundle_config
    from videopoet.core.errors import ConfigError
    from videopoet.data.evaluation import PROBES

    tasks = _tasks(args.tasks)
    unknown = [t for t in tasks or [] if t not in PROBES]
    if unknown:  # before any model is loaded
        raise ConfigError("tasks", ",".join(unknown), f"tasks among {', '.join(PROBES)}")
    if args.seeds < 1:
        raise ConfigError("seeds", args.seeds, "at least 1")
    read_bundle_config(args.bundle)

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError("threads", args.threads, "at least 1")
        import torch

        torch.set_num_threads(args.threads)

    from videopoet.core.engine import Engine
    from videopoet.data.evaluation import FIGURES, evaluate

    engine = Engine.from_pretrained(args.bundle, device=args.device)
    result = evaluate(
        engine,
        seeds=args.seeds,
        tasks=tasks,
        format=args.format,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        cfg_scale=args.cfg_scale,
        untrained=not args.no_untrained,
        init_seed=args.init_seed,
        progress=not args.quiet,
    )
    if args.json:
        print(json.dumps(result.to_json(str(args.bundle))))
        return 0
    rows = [("task", "figure", "bundle", "untrained"), *result.table()]
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    print(f"{args.bundle}: {result.seeds} held-out seeds at {result.format}")
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [row[c].rjust(widths[c]) for c in (2, 3)]
        line = "  ".join(cells)
        if n:
            line += f"  {FIGURES[row[1]][1]}"
        print(line)
    for task, why in result.skipped.items():
        print(f"skipped {task}: {why}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure a bundle on held-out world samples, beside its untrained twin",
        description="Generate with each task on N held-out world samples and measure the "
        "outputs with the world's analyser; the same with an untrained LM for reference.",
    )
    p.add_argument("bundle", help="bundle folder (videopoet init DIR, or a trained one)")
    p.add_argument("--seeds", type=int, default=8, help="held-out samples per task (default 8)")
    p.add_argument("--tasks", default=None, help="comma-separated subset, e.g. t2v,fp")
    p.add_argument("--format", default=None, help="one of the bundle's video formats")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--cfg-scale", type=float, default=1.0)
    p.add_argument("--init-seed", type=int, default=0, help="seed of the untrained LM")
    p.add_argument("--no-untrained", action="store_true", help="skip the untrained reference")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads (1 is fastest for tiny models)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)


def main(argv: list[str] | None = None) -> int:
    """Run `evaluate` alone; errors are printed like the ``videopoet`` command prints them."""
    from videopoet.core.errors import VideoPoetError

    parser = argparse.ArgumentParser(prog="videopoet")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["evaluate", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except VideoPoetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
