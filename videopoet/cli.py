"""The `videopoet` command: thin argument parsing over the library's public functions."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from videopoet.core.errors import VideoPoetError


class IntermixedParser(argparse.ArgumentParser):
    """A subcommand's parser whose options may stand anywhere among its positional words.

    argparse matches positionals in runs: ``run NAME --out D a=b`` gives NAME and an empty
    list of overrides to the first run, and ``a=b`` is then left over. A subcommand with a
    list of positionals (``KEY=VALUE`` overrides, folders) is parsed the way
    :meth:`~argparse.ArgumentParser.parse_intermixed_args` parses: options first, then the
    words left, in order. (``parse_intermixed_args`` refuses a parser with subparsers, so the
    ``videopoet`` parser gives this class to each subparser instead.)
    """

    _inner = False  # inside the intermixed parse, which calls parse_known_args itself

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201
        lists = any(a.nargs in ("*", "+") for a in self._get_positional_actions())
        if self._inner or not lists:
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


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
        behaviour = registry.task_behaviour(name)
        target = [f"visual:{spec.target.visual}"] if spec.target.visual else []
        target += ["audio"] if spec.target.audio else []
        rows.append(
            {
                "name": name,
                "token": spec.token_name,
                "inputs": [
                    {"name": i.name, "kind": i.kind, "optional": i.optional}
                    for i in behaviour.inputs()
                ],
                "target": target,
                "formats": [str(f) for f in spec.formats],
                "eos": spec.eos,
                "plugin": registry.owners[("tasks", name)].name,
                "distribution": registry.owner("tasks", name),
                "description": spec.description,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max((len(r["name"]) for r in rows), default=4)
    for r in rows:
        shown = [i["name"] + ("?" if i["optional"] else "") for i in r["inputs"]]
        ins = " + ".join(shown) or "(nothing)"
        print(f"{r['name']:<{width}}  {r['token']:<16} {ins} -> {' + '.join(r['target'])}")
        print(
            f"{'':<{width}}  {r['description']}; from {r['distribution']}; "
            f"formats {', '.join(r['formats'])}"
        )
    print("(? = optional input)")
    return 0


def cmd_layout(args: argparse.Namespace) -> int:
    import math
    from pathlib import Path

    from videopoet.core.declarations import FPS, Format
    from videopoet.core.errors import ConfigError
    from videopoet.core.vocabulary import Vocabulary
    from videopoet.sequences.describe import layout_table
    from videopoet.sequences.layout import build_layout

    #: the longest layout this command builds: every position costs three Python list entries,
    #: and the paper's longest sequence (super-resolution, 35,840 visual tokens) is far below
    max_tokens = 10_000_000
    seconds = args.audio_seconds
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError("audio_seconds", seconds, "a positive, finite duration in seconds")
    if args.audio_levels is not None:
        checkpoint = args.encodec_checkpoint
        if not checkpoint:
            raise ConfigError(
                "audio_levels",
                args.audio_levels,
                "no value without --encodec-checkpoint (registered audio tokenizers declare "
                "their own RVQ levels)",
            )
        if Path(checkpoint).is_dir():
            raise ConfigError(
                "audio_levels",
                args.audio_levels,
                f"no value with the saved tokenizer directory {checkpoint} (its config.json "
                "sets the levels); --audio-levels selects levels of an official .th file",
            )
    registry = _registry()
    task = registry.task(args.task)
    if args.checkpoint:
        return _bundle_layout(args, task)
    audio_spec = None
    if args.encodec_checkpoint:
        from videopoet.plugins.encodec_audio import spec_from_checkpoint

        levels = 4 if args.audio_levels is None else args.audio_levels
        audio_spec = spec_from_checkpoint(args.encodec_checkpoint, levels=levels)
    vocab = Vocabulary.from_registry(
        registry, visual=args.visual_tokenizer, audio=args.audio_tokenizer, audio_spec=audio_spec
    )
    frames = args.frames if args.frames is not None else task.formats[0].frames
    fmt = Format(frames=frames, height=args.height, width=args.width)

    # Refuse an absurd size before build_layout allocates it. An upper bound, computed from the
    # output: every visual input is at most the output's length (build_layout checks it).
    def count(n: int) -> str:
        return f"{n:,}" if n < 10**12 else f"{n:.3g}"

    visual_bound = audio_bound = 0
    parts = []
    if vocab.visual is not None and (task.target.visual or task.prefix.visual):
        inputs = getattr(task.prefix, "visual_inputs", None)
        clips = bool(task.target.visual) + (
            len(inputs) if inputs is not None else int(bool(task.prefix.visual))
        )
        try:
            per_clip = vocab.visual.token_count(fmt.frames, fmt.height, fmt.width)
        except VideoPoetError:
            per_clip = 0  # a bad geometry: build_layout reports it
        visual_bound = clips * per_clip
        parts.append(f"{clips} x {count(per_clip)} visual at {fmt}")
    spans = bool(task.target.audio) + bool(task.prefix.audio)
    if vocab.audio is not None and spans:
        audio_seconds = fmt.seconds if seconds is None else seconds
        if task.prefix.condition_frames:
            audio_seconds = max(audio_seconds, task.prefix.condition_frames / FPS)
        try:
            per_span = vocab.audio.token_count(audio_seconds)
        except VideoPoetError:
            per_span = 0
        audio_bound = spans * per_span
        parts.append(f"{spans} x {count(per_span)} audio for {audio_seconds:g} s")
    if visual_bound + audio_bound > max_tokens:
        field, value = "format", str(fmt)
        if audio_bound > visual_bound and seconds is not None:
            field, value = "audio_seconds", seconds
        raise ConfigError(
            field,
            value,
            f"a layout of at most {max_tokens:,} tokens (this one would hold up to "
            f"{count(visual_bound + audio_bound)}: {' + '.join(parts)})",
        )
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
        print(layout_table(layout, vocab))
    return 0


def _bundle_layout(args: argparse.Namespace, task) -> int:
    """The layout a bundle really builds: its vocabulary (format tokens included) and format."""
    from videopoet.core.declarations import Format
    from videopoet.core.engine import Engine
    from videopoet.sequences.describe import layout_table

    engine = Engine.from_pretrained(args.checkpoint)
    fmt = None
    if args.frames is not None:
        fmt = Format(frames=args.frames, height=args.height, width=args.width)
    layout = engine.layout(task, engine.pick_format(task, fmt))
    print(
        json.dumps(layout.to_dict(), indent=2) if args.json else layout_table(layout, engine.vocab)
    )
    return 0


def cmd_train_tokenizer(args: argparse.Namespace) -> int:
    from videopoet.core.tokenizer_training import train_tokenizer_from_yaml
    from videopoet.core.training import is_main_process

    result = train_tokenizer_from_yaml(args.config, args.overrides)
    if is_main_process():  # once under torchrun
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
    sub = parser.add_subparsers(dest="command", required=True, parser_class=IntermixedParser)

    p = sub.add_parser("plugins", help="list installed plugins, their hooks and load errors")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("tasks", help="list registered tasks")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("layout", help="show a task's token layout with span lengths")
    p.add_argument("task")
    p.add_argument(
        "--frames",
        type=int,
        default=None,
        help="default: the task's first format; a layout holds at most 10,000,000 tokens",
    )
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
    p.add_argument(
        "--audio-levels",
        type=int,
        default=None,
        help="RVQ levels used of an official .th file (default 4); an error otherwise",
    )
    p.add_argument("--any-format", action="store_true", help="allow formats outside the task's")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="a bundle: its vocabulary, format tokens and formats (default format: its first)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_layout)

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

    from videopoet import cli_evaluate, cli_generate, cli_recipes, cli_train

    cli_generate.add_parsers(sub)
    cli_train.add_parsers(sub)
    cli_evaluate.add_parsers(sub)
    from videopoet import cli_demo

    cli_demo.add_parsers(sub)
    from videopoet import cli_superres

    cli_superres.add_parsers(sub)
    cli_recipes.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a reader that went away shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        # `videopoet ... | head -1`: as the Python docs (signal module, "Note on SIGPIPE")
        # advise, point stdout at devnull so the final flush is silent, and exit with 1.
        import os

        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # no file descriptor behind stdout (captured in tests)
            pass
        return 1
    except (VideoPoetError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
