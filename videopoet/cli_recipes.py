"""`videopoet run` and `videopoet recipes`: YAML recipes that chain tasks (docs/recipes.md)."""

from __future__ import annotations

import argparse
import json


def cmd_run(args: argparse.Namespace) -> int:
    from videopoet.recipes.runner import plan_recipe, run_recipe

    if args.dry_run:
        plan = plan_recipe(args.recipe, args.overrides, device=args.device, allow=args.allow)
        print(json.dumps(plan.describe(), indent=2) if args.json else plan.text())
        return 0
    result = run_recipe(
        args.recipe,
        args.overrides,
        out=args.out,
        force=args.force,
        device=args.device,
        progress=not args.quiet,
        allow=args.allow,
    )
    print(json.dumps(result.summary()))
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from videopoet.recipes.loader import builtin_recipes

    rows = builtin_recipes()
    if args.json:
        print(json.dumps([{"name": r["name"], "description": r["description"]} for r in rows]))
        return 0
    width = max((len(r["name"]) for r in rows), default=4)
    for row in rows:
        print(f"{row['name']:<{width}}  {row['description']}")
    print(
        "\nrun one: videopoet run NAME bundle=DIR [key=value ...]  (--dry-run shows the plan);"
        "\na recipe of stages (train-...) makes its own bundle: videopoet run NAME [key=value ...]"
    )
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a YAML recipe that chains tasks (docs/recipes.md)")
    p.add_argument("recipe", help="a recipe file, or a built-in recipe's name (videopoet recipes)")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="overrides, e.g. bundle=DIR inputs.image=w/frame0.png steps.stylize.options.seed=3",
    )
    p.add_argument("--dry-run", action="store_true", help="validate and print the plan only")
    p.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON")
    p.add_argument(
        "--force",
        action="store_true",
        help="run every step, even unchanged ones (a recipe of stages: start every stage over)",
    )
    p.add_argument("--out", default=None, help="run folder (default: outputs/RECIPE_NAME)")
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="DIR",
        help="another folder input files may come from (besides the recipe's and the cwd)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("recipes", help="list the built-in recipes")
    p.add_argument("--json", action="store_true", help="a list of {name, description}")
    p.set_defaults(func=cmd_recipes)
