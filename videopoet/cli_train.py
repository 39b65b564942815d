"""`videopoet tokenize` and `videopoet train`: the LM's data and trainer from YAML."""

from __future__ import annotations

import argparse
import json


def cmd_tokenize(args: argparse.Namespace) -> int:
    from videopoet.core.lm_training import tokenize_from_yaml

    print(json.dumps(tokenize_from_yaml(args.config, args.overrides), default=str))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from videopoet.core.lm_training import train_lm_from_yaml
    from videopoet.core.training import is_main_process

    result = train_lm_from_yaml(args.config, args.overrides)
    if is_main_process():  # once under torchrun
        print(json.dumps(result, default=str))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from videopoet.core.generation_config import apply_overrides
    from videopoet.core.lm_training import bundle_from_run

    apply_overrides(None, args.generation)  # the syntax and values, before any model loads
    path = bundle_from_run(args.run, args.out, args.step, generation=args.generation)
    print(json.dumps({"bundle": str(path)}))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from videopoet.cli_generate import add_generation_argument

    p = sub.add_parser("tokenize", help="tokenize a dataset into token shards for LM training")
    p.add_argument("config", help="YAML config (see configs/lm/)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. world.seed=1")
    p.set_defaults(func=cmd_tokenize)

    p = sub.add_parser("train", help="train the prefix LM on a task mixture from YAML")
    p.add_argument("config", help="YAML config (see configs/lm/)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=100")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="a bundle from a training run's checkpoint")
    p.add_argument("run", help="train.out_dir of a videopoet train run")
    p.add_argument("--out", required=True, help="the bundle folder to write")
    p.add_argument("--step", type=int, default=None, help="default: the newest checkpoint")
    add_generation_argument(p)
    p.set_defaults(func=cmd_export)
