"""`videopoet train-refiner` and `videopoet add-refiner`: super-resolution stages from YAML and
into bundles (docs/superres.md)."""

from __future__ import annotations

import argparse
import json


def cmd_train_refiner(args: argparse.Namespace) -> int:
    from videopoet.core.errors import ConfigError
    from videopoet.core.training import is_main_process
    from videopoet.plugins.superres.train import train_refiner_from_yaml, validate_config

    if args.check:
        plan = validate_config(args.config, args.overrides)
        stage = plan.stage
        print(
            json.dumps(
                {
                    "ok": True,
                    "grid": list(stage.grid),
                    "lr_grid": list(stage.lr_grid),
                    "group_bits": stage.group_bits,
                    "parameters": stage.parameter_count(),
                }
            )
        )
        return 0
    if args.evaluate:
        from videopoet.core.tokenizer_training import load_config
        from videopoet.plugins.superres.train import evaluate_run

        sampling = {}
        for item in args.sampling or []:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError("sampling", item, "KEY=VALUE, e.g. temperature=0")
            sampling[key.strip()] = int(value) if key.strip() == "steps" else float(value)
        config = load_config(args.config, args.overrides)
        print(json.dumps(evaluate_run(config, args.evaluate, sampling)))
        return 0
    result = train_refiner_from_yaml(args.config, args.overrides, prepare_only=args.prepare)
    if is_main_process():  # once under torchrun
        print(json.dumps(result, default=str))
    return 0


def cmd_add_refiner(args: argparse.Namespace) -> int:
    from videopoet.plugins.superres.refiner import add_to_bundle

    out = args.out or args.bundle
    print(json.dumps(add_to_bundle(args.bundle, args.stages, out, args.description or "")))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-refiner", help="train a super-resolution stage from YAML")
    p.add_argument("config", help="YAML config (see configs/superres/)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=100")
    p.add_argument("--check", action="store_true", help="validate the config and stop")
    p.add_argument(
        "--prepare", action="store_true", help="tokenize the clips into OUT_DIR/tokens and stop"
    )
    p.add_argument(
        "--evaluate",
        type=int,
        default=0,
        metavar="CLIPS",
        help="sample CLIPS held-out clips with the run's newest checkpoint and stop",
    )
    p.add_argument(
        "--sampling",
        action="append",
        metavar="KEY=VALUE",
        help="with --evaluate: steps, text_scale, lr_scale, temperature, choice_temperature",
    )
    p.set_defaults(func=cmd_train_refiner)

    p = sub.add_parser(
        "add-refiner", help="put trained super-resolution stage(s) into a bundle (a cascade)"
    )
    p.add_argument("bundle", help="bundle folder")
    p.add_argument("stages", nargs="+", help="trained refiner folders, first stage first")
    p.add_argument("--out", default=None, help="write a new bundle here (default: in place)")
    p.add_argument("--description", default=None, help="the bundle's new description")
    p.set_defaults(func=cmd_add_refiner)
