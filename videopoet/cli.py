"""The `videopoet` command: thin argument parsing over the library's public functions."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from videopoet.core.errors import VideoPoetError


def _registry():
    from videopoet.core.plugins import get_registry

    return get_registry()


def _warn_broken(registry) -> None:
    for info in registry.plugins:
        for error in info.errors:
            print(f"warning: plugin {info.name} ({info.distribution}): {error}", file=sys.stderr)


def cmd_plugins(args: argparse.Namespace) -> int:
    registry = _registry()
    rows = [
        {
            "name": p.name,
            "distribution": p.distribution,
            "version": p.version,
            "hooks": p.hooks,
            "provides": sorted(
                f"{attr[:-1]}:{name}" for (attr, name), o in registry.owners.items() if o is p
            ),
            "errors": p.errors,
        }
        for p in registry.plugins
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        status = "ok" if not row["errors"] else "ERROR"
        print(f"{row['name']} ({row['distribution']} {row['version']}) [{status}]")
        print(f"  hooks: {', '.join(row['hooks']) or '-'}")
        print(f"  provides: {', '.join(row['provides']) or '-'}")
        for error in row["errors"]:
            print(f"  error: {error}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    registry = _registry()
    _warn_broken(registry)
    rows = []
    for name, spec in sorted(registry.tasks.items()):
        prefix = [k for k in ("text", "visual", "audio") if getattr(spec.prefix, k)]
        prefix = [f"{k}:{spec.prefix.visual}" if k == "visual" else k for k in prefix]
        target = [f"visual:{spec.target.visual}"] if spec.target.visual else []
        target += ["audio"] if spec.target.audio else []
        rows.append(
            {
                "name": name,
                "token": spec.token_name,
                "prefix": prefix,
                "target": target,
                "formats": [str(f) for f in spec.formats],
                "eos": spec.eos,
                "plugin": registry.owners[("tasks", name)].name,
                "description": spec.description,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max((len(r["name"]) for r in rows), default=4)
    for r in rows:
        ins = " + ".join(r["prefix"]) or "(nothing)"
        print(f"{r['name']:<{width}}  {r['token']:<16} {ins} -> {' + '.join(r['target'])}")
        print(f"{'':<{width}}  {r['description']}; formats {', '.join(r['formats'])}")
    return 0


def cmd_layout(args: argparse.Namespace) -> int:
    from videopoet.core.declarations import Format
    from videopoet.core.vocabulary import Vocabulary
    from videopoet.sequences.describe import layout_table
    from videopoet.sequences.layout import build_layout

    registry = _registry()
    task = registry.task(args.task)
    audio_spec = None
    if args.encodec_checkpoint:
        from videopoet.plugins.encodec_audio import spec_from_checkpoint

        audio_spec = spec_from_checkpoint(args.encodec_checkpoint, levels=args.audio_levels)
    vocab = Vocabulary.from_registry(
        registry, visual=args.visual_tokenizer, audio=args.audio_tokenizer, audio_spec=audio_spec
    )
    frames = args.frames if args.frames is not None else task.formats[0].frames
    fmt = Format(frames=frames, height=args.height, width=args.width)
    layout = build_layout(
        task,
        vocab,
        fmt,
        text_tokens=args.text_tokens if task.prefix.text else None,
        input_frames=args.input_frames,
        audio_seconds=args.audio_seconds,
        strict_format=not args.any_format,
    )
    if args.json:
        print(json.dumps(layout.to_dict(), indent=2))
    else:
        print(layout_table(layout))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    print("== installed plugins")
    cmd_plugins(build_parser().parse_args(["plugins"]))
    print("\n== tasks")
    cmd_tasks(build_parser().parse_args(["tasks"]))
    print("\n== layout of text-to-video")
    return cmd_layout(build_parser().parse_args(["layout", "t2v"]))


def cmd_train_tokenizer(args: argparse.Namespace) -> int:
    from videopoet.core.tokenizer_training import train_tokenizer_from_yaml

    result = train_tokenizer_from_yaml(args.config, args.overrides)
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_world(args: argparse.Namespace) -> int:
    from videopoet.core.declarations import parse_format
    from videopoet.core.errors import ConfigError
    from videopoet.data import world
    from videopoet.data.world_files import write_sample

    sizes = (args.frames, args.height, args.width)
    if args.format is not None:
        if any(v is not None for v in sizes):
            raise ConfigError("format", args.format, "either --format or --frames/--height/--width")
        fmt = parse_format(args.format)
        sizes = (fmt.frames, fmt.height, fmt.width)
    frames, height, width = (
        v if v is not None else d for v, d in zip(sizes, (17, 64, 64), strict=True)
    )
    item = world.sample(args.index, frames, height, width, world.WorldConfig(seed=args.seed))
    record = write_sample(item, args.out, args.seed)
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print(f"wrote {', '.join(record['files'])} to {args.out}")
        print(f"caption: {record['caption']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videopoet", description="VideoPoet: a prefix LM for zero-shot video generation."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plugins", help="list installed plugins, their hooks and load errors")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("tasks", help="list registered tasks")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("layout", help="show a task's token layout with span lengths")
    p.add_argument("task")
    p.add_argument("--frames", type=int, default=None, help="default: the task's first format")
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--audio-seconds", type=float, default=None, help="default: the clip length")
    p.add_argument("--text-tokens", type=int, default=64)
    p.add_argument("--input-frames", type=int, default=None, help="frames of a video condition")
    p.add_argument("--visual-tokenizer", default=None, help="registered tokenizer name")
    p.add_argument("--audio-tokenizer", default=None, help="registered tokenizer name")
    p.add_argument(
        "--encodec-checkpoint",
        default=None,
        help="an official EnCodec .th file or a saved encodec tokenizer directory",
    )
    p.add_argument("--audio-levels", type=int, default=4, help="RVQ levels used with it")
    p.add_argument("--any-format", action="store_true", help="allow formats outside the task's")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_layout)

    p = sub.add_parser("demo", help="the main job on the built-in synthetic world")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("world", help="write one sample of the built-in synthetic world as files")
    p.add_argument("--seed", type=int, default=0, help="the world's seed")
    p.add_argument("--index", type=int, default=0, help="sample index (held out from 1e9 on)")
    p.add_argument("--frames", type=int, default=None, help="default 17")
    p.add_argument("--height", type=int, default=None, help="default 64")
    p.add_argument("--width", type=int, default=None, help="default 64")
    p.add_argument("--format", default=None, help="FRAMESxHEIGHTxWIDTH instead, e.g. 17x64x64")
    p.add_argument("--out", required=True, help="output folder (created if needed)")
    p.add_argument("--json", action="store_true", help="print sample.json")
    p.set_defaults(func=cmd_world)

    p = sub.add_parser("train-tokenizer", help="train a visual or audio tokenizer from YAML")
    p.add_argument("config", help="YAML config (see configs/tokenizer/)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=100")
    p.set_defaults(func=cmd_train_tokenizer)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (VideoPoetError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
