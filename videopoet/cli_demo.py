"""`videopoet demo`: every task of the paper with a bundle, as a gallery (docs/demo.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from videopoet.cli_generate import CHECKPOINTS
from videopoet.core.errors import ConfigError

#: the trained tiny bundle committed with the repository
DEFAULT_BUNDLE = CHECKPOINTS / "videopoet_tiny_world"
#: the built-in recipe `--train` runs, and its default run folder
TRAIN_RECIPE, TRAIN_OUT = "train-world-tiny", Path("runs") / "train-world-tiny"


def missing_bundle(path: Path) -> ConfigError:
    """The error for a bundle folder that is not there, saying how to get one."""
    default = path.resolve() == DEFAULT_BUNDLE.resolve()
    how = (
        "the trained tiny bundle, committed with the repository: check out the whole "
        "repository (or train it again with `videopoet demo --train`, about 2 h 35 min on 2 cores)"
        if default
        else "a bundle folder"
    )
    return ConfigError(
        "bundle",
        str(path),
        f"{how}; for a quick look at the demo with an untrained model, run "
        "`videopoet init untrained-bundle` and `videopoet demo --bundle untrained-bundle`",
    )


def train_bundle(out: Path, overrides: list[str], progress: bool) -> Path:
    """Run the training recipe into ``out`` (finished stages are skipped, an interrupted one
    resumes) and say where its bundle is; returns the bundle folder."""
    from videopoet.recipes.runner import run_recipe

    result = run_recipe(TRAIN_RECIPE, overrides, out=out, progress=progress)
    bundle = result.final.outputs.get("bundle")
    if bundle is None:
        expected = f"a {TRAIN_RECIPE} run whose last stage has a bundle"
        raise ConfigError("train_set", overrides, expected)
    print(f"trained bundle: {bundle} (run folder {out}, model card {bundle / 'MODEL_CARD.md'})")
    print(f"look at it again: videopoet demo --bundle {bundle}")
    return Path(bundle)


def cmd_demo(args: argparse.Namespace) -> int:
    from videopoet.core.bundle import BUNDLE_NAME

    if args.train is not None and "=" in args.train and not Path(args.train).exists():
        # --train takes an optional folder: `--train inputs.seed=1` would make it that folder
        expected = "a run folder; overrides of the training recipe go after --train-set"
        raise ConfigError("train", args.train, f"{expected} (--train --train-set {args.train})")
    if args.train is not None and args.bundle is not None:
        expected = "no --bundle with --train (the demo shows what it trains)"
        raise ConfigError("bundle", args.bundle, expected)
    if args.train_set and args.train is None:
        raise ConfigError("train_set", args.train_set, "no --train-set without --train")
    bundle = Path(args.bundle) if args.bundle is not None else DEFAULT_BUNDLE
    if args.train is None and not (bundle / BUNDLE_NAME).is_file():
        raise missing_bundle(bundle)
    if args.samples is not None and args.samples < 1:
        raise ConfigError("samples", args.samples, "at least 1")
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError("threads", args.threads, "at least 1")
        import torch

        torch.set_num_threads(args.threads)

    from videopoet.demo.runner import check_out, run_demo

    check_out(Path(args.out))  # before any model is loaded (or trained)
    if args.train is not None:
        bundle = train_bundle(Path(args.train), args.train_set or [], not args.quiet)
    sampling = {"cfg_scale": args.cfg_scale, "temperature": args.temperature}
    sampling |= {"top_k": args.top_k, "top_p": args.top_p}
    report = run_demo(
        bundle,
        args.out,
        quick=args.quick,
        seed=args.seed,
        samples=args.samples,
        sampling={k: v for k, v in sampling.items() if v is not None},
        untrained=not args.no_untrained,
        cases=[c.strip() for c in args.cases.split(",") if c.strip()] if args.cases else None,
        device=args.device,
        progress=not args.quiet,
    )
    rows = [("case", "figure", "bundle", "reference", "better")]
    rows += [r for r in report.rows() if r[1] != "skipped"]
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [row[2].rjust(widths[2]), row[3].rjust(widths[3]), f"({row[4]} is better)"]
        print("  ".join(cells) if row is not rows[0] else "  ".join(cells[:4]))
    for entry in report.entries:
        if entry.skipped:
            print(f"not shown: {entry.key}: {entry.skipped}")
    for note in report.notes:
        print(f"note: {note}")
    print(f"demo: {len(report.entries)} cases in {report.seconds:.0f} s")
    if args.screenshot:
        from videopoet.demo.browser import check_gallery

        check = check_gallery(report.index, screenshot=args.screenshot)
        print(f"browser check: {check.summary()}; screenshot {args.screenshot}")
        if not check.ok:
            for problem in check.problems:
                print(f"  {problem}", file=sys.stderr)
            return 1
    print(f"gallery: {report.index.resolve()}  (open it in a browser)")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from videopoet.core.generation_config import add_sampling_arguments

    p = sub.add_parser(
        "demo",
        help="every task with a bundle on held-out world samples: an HTML gallery",
        description="Run every task of the paper (and super-resolution and two chains) with a "
        "bundle on fresh held-out samples of the built-in world, beside an untrained LM of the "
        "same config, and write a gallery (index.html) with each task's inputs, outputs, "
        "progressive preview and measured figures.",
    )
    p.add_argument(
        "--bundle",
        default=None,
        help="bundle folder (default: the committed trained tiny bundle, "
        "checkpoints/videopoet_tiny_world)",
    )
    p.add_argument(
        "--train",
        nargs="?",
        const=str(TRAIN_OUT),
        default=None,
        metavar="RUN_DIR",
        help=f"first train the bundle with the recipe {TRAIN_RECIPE} into RUN_DIR (default "
        f"{TRAIN_OUT}; about 2 h 35 min on 2 CPU cores; run again to resume), then show it",
    )
    p.add_argument(
        "--train-set",
        nargs="+",
        action="extend",
        metavar="KEY=VALUE",
        help="overrides of the training recipe, e.g. inputs.seed=1 inputs.text_encoder=minilm",
    )
    p.add_argument("--out", default="demo-output", help="gallery folder (default demo-output)")
    p.add_argument("--quick", action="store_true", help="a reduced set of cases, one sample each")
    p.add_argument("--seed", type=int, default=0, help="picks the world samples and sampling seeds")
    p.add_argument(
        "--samples", type=int, default=None, help="held-out samples per case (default 3, quick 1)"
    )
    p.add_argument("--cases", default=None, help="comma-separated case keys, e.g. t2v,v2a")
    add_sampling_arguments(p, "guidance for the tasks with a condition to drop")
    p.add_argument("--no-untrained", action="store_true", help="skip the untrained reference")
    p.add_argument(
        "--screenshot",
        default=None,
        metavar="PNG",
        help="then open the gallery in headless Chromium, check every medium plays, save a "
        "screenshot",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)
