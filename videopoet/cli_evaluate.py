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
    if args.first < 0:
        raise ConfigError("first", args.first, "a held-out index >= 0")
    read_bundle_config(args.bundle)
    extractor = None
    if args.fvd:  # before any model is loaded, like the other checks
        from videopoet.data.frechet import extractor_from_argument

        if args.fvd_clips < 2:
            raise ConfigError("fvd_clips", args.fvd_clips, "at least 2")
        extractor = extractor_from_argument(args.fvd_features)

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError("threads", args.threads, "at least 1")
        import torch

        torch.set_num_threads(args.threads)

    from videopoet.core.engine import Engine
    from videopoet.data.evaluation import FIGURES, SUPERRES_FIGURES, evaluate

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
        first=args.first,
        superres=not args.no_superres,
    )
    fvd = None
    if extractor is not None:
        from videopoet.data.evaluation import task_sampling, untrained_engine
        from videopoet.data.frechet import frechet_figures

        given = {"cfg_scale": args.cfg_scale, "temperature": args.temperature}
        given |= {"top_k": args.top_k, "top_p": args.top_p}

        fvd = frechet_figures(
            engine,
            extractor,
            clips=args.fvd_clips,
            untrained=None if args.no_untrained else untrained_engine(engine, args.init_seed),
            format=args.format,
            sampling=task_sampling(engine, "t2v", given),
            progress=not args.quiet,
        )
        result.figures["t2v_fvd"] = fvd.pop("bundle")
        if result.untrained is not None:
            result.untrained["t2v_fvd"] = fvd.pop("untrained")
    if args.json:
        payload = result.to_json(str(args.bundle))
        if fvd is not None:
            payload["fvd"] = fvd
        print(json.dumps(payload))
        return 0
    rows = [("task", "figure", "bundle", "untrained"), *result.table()]
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    start = f" from #{result.first}" if result.first else ""
    print(f"{args.bundle}: {result.seeds} held-out seeds{start} at {result.format}")
    if result.sampling:
        from videopoet.core.generation_config import describe_sampling

        print(f"sampling (bundle and untrained): {describe_sampling(result.sampling)}")
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [row[c].rjust(widths[c]) for c in (2, 3)]
        line = "  ".join(cells)
        if n:
            line += f"  {(FIGURES | SUPERRES_FIGURES)[row[1]][1]}"
        print(line)
    if fvd is not None:
        untrained = (result.untrained or {}).get("t2v_fvd")
        print(
            f"t2v_fvd {result.figures['t2v_fvd']:.4g} (untrained "
            f"{'-' if untrained is None else f'{untrained:.4g}'}; real vs real "
            f"{fvd['real_vs_real']:.4g}): Fréchet distance of {fvd['clips']} text-to-video clips "
            f"to real held-out clips, {fvd['extractor']} features (lower is better)"
        )
    for task, why in result.skipped.items():
        print(f"skipped {task}: {why}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from videopoet.core.generation_config import add_sampling_arguments

    p = sub.add_parser(
        "evaluate",
        help="measure a bundle on held-out world samples, beside its untrained twin",
        description="Generate with each task on N held-out world samples and measure the "
        "outputs with the world's analyser; the same with an untrained LM for reference.",
    )
    p.add_argument("bundle", help="bundle folder (videopoet init DIR, or a trained one)")
    p.add_argument("--seeds", type=int, default=8, help="held-out samples per task (default 8)")
    p.add_argument(
        "--first",
        type=int,
        default=0,
        metavar="INDEX",
        help="held-out samples from this one on (default 0); tune sampling on another range, "
        "e.g. --first 1000, than the one you report",
    )
    p.add_argument("--tasks", default=None, help="comma-separated subset, e.g. t2v,fp")
    p.add_argument("--format", default=None, help="one of the bundle's video formats")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    add_sampling_arguments(p, "guidance for the tasks with a condition to drop")
    p.add_argument("--init-seed", type=int, default=0, help="seed of the untrained LM")
    p.add_argument("--no-untrained", action="store_true", help="skip the untrained reference")
    p.add_argument(
        "--no-superres",
        action="store_true",
        help="skip the super-resolution figures (the slowest part; a bundle with a refiner)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads (1 is fastest for tiny models)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--fvd",
        action="store_true",
        help="also t2v_fvd: the Fréchet distance of text-to-video clips to real held-out clips",
    )
    p.add_argument(
        "--fvd-features",
        default="analyser",
        metavar="EXTRACTOR",
        help="features for --fvd: analyser (default, no weights) or a feature network's folder",
    )
    p.add_argument("--fvd-clips", type=int, default=16, help="clips per set for --fvd (16)")
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
