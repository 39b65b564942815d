"""YAML recipes that chain tasks (paper section 7): schema, loader, validator and runner.

``run_recipe(path_or_dict, overrides)`` validates the whole chain, then runs it step by step
into a run folder; ``plan_recipe`` stops after validation (``videopoet run --dry-run``).
A recipe of pipeline stages (``stage:`` steps: init, tokenize, train, ...) trains a bundle
instead (:mod:`videopoet.recipes.stages`). See docs/recipes.md. Names are imported lazily, so
listing recipes does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RecipeError": "errors",
    "StageStopped": "errors",
    "StepError": "errors",
    "LoadedRecipe": "loader",
    "builtin_recipes": "loader",
    "load_recipe": "loader",
    "RecipeResult": "runner",
    "StepResult": "runner",
    "plan_recipe": "runner",
    "run_recipe": "runner",
    "StageResult": "stage_runner",
    "STAGES": "stages",
    "Recipe": "schema",
    "Sampling": "schema",
    "Step": "schema",
    "StepRef": "schema",
    "Plan": "validate",
    "PlannedStep": "validate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'videopoet.recipes' has no attribute {name!r}")
    return getattr(importlib.import_module(f"videopoet.recipes.{module}"), name)
