"""Prefix-LM checkpoints: safetensors weights, ``config.json`` and ``tokens.json``.

The vocabulary's name→id table is saved beside the weights; loading rebuilds it against the
installed plugins with the saved table as ``base``, so a plugin that would move an id, or a
tokenizer whose codebooks differ, is a :class:`VocabularyError` instead of a silent shift.
Nothing is unpickled: weights are safetensors, everything else JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from videopoet.core.errors import ConfigError, VocabularyError
from videopoet.core.serialization import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    load_json,
    load_pretrained,
    load_weights,
    save_pretrained,
    wrong_kind,
)
from videopoet.core.vocabulary import Vocabulary

TOKENS_NAME = "tokens.json"
KIND = "videopoet.prefix_lm"


def save_lm(model: Any, directory: str | Path, vocab: Vocabulary) -> Path:
    """Write ``model`` (a PrefixLM) and ``vocab``'s token table into ``directory``."""
    if vocab.size != model.config.vocab_size:
        raise VocabularyError(
            f"the vocabulary has {vocab.size} ids but the model was built for "
            f"{model.config.vocab_size}"
        )
    config = {"kind": KIND, "model": model.config.model_dump(mode="json")}
    return save_pretrained(directory, model, config, extra_json={TOKENS_NAME: vocab.to_dict()})


def load_lm(
    directory: str | Path,
    *,
    registry: Any = None,
    visual: Any = None,
    audio: Any = None,
    device: str | torch.device = "cpu",
) -> Any:
    """A PrefixLM from ``directory`` with its checked vocabulary as ``model.vocab``.

    ``visual`` / ``audio``: tokenizer specs or registered names; by default the tokenizers
    named in the saved table, looked up in the installed registry.
    """
    from videopoet.core.model import ModelConfig, PrefixLM
    from videopoet.core.plugins import get_registry

    directory = Path(directory)
    state, config = load_pretrained(directory, device=device)
    expected = f"a {KIND} checkpoint (a prefix LM saved by save_lm)"
    if config.get("kind") != KIND:
        raise wrong_kind(directory, config, expected)
    config_path = directory / CONFIG_NAME
    if not isinstance(config.get("model"), dict):
        raise ConfigError("path", str(config_path), f"{expected}: a config with a model section")
    try:
        model_config = ModelConfig(**config["model"])
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            "path", str(config_path), f"{expected}: model.{field} {first['msg'].lower()}"
        ) from None
    tokens_path = directory / TOKENS_NAME
    if not tokens_path.is_file():
        raise ConfigError("directory", str(directory), f"{expected}; it has no {TOKENS_NAME}")
    table = load_json(tokens_path)
    if not isinstance(table, dict):
        raise ConfigError("path", str(tokens_path), "a JSON object (the vocabulary's table)")
    registry = registry if registry is not None else get_registry()
    saved = {book["modality"]: book["tokenizer"] for book in table.get("codebooks", [])}
    specs = {}
    for modality, given in (("visual", visual), ("audio", audio)):
        if given is None and modality not in saved:
            specs[modality] = None
        elif given is None or isinstance(given, str):
            specs[modality] = registry.tokenizer_for(modality, given or saved[modality])
        else:
            specs[modality] = given
    vocab = Vocabulary(registry.tasks.values(), specs["visual"], specs["audio"], base=table)
    if vocab.size != model_config.vocab_size:
        raise VocabularyError(
            f"the rebuilt vocabulary has {vocab.size} ids, the checkpoint's model "
            f"{model_config.vocab_size}"
        )
    model = PrefixLM(model_config)
    load_weights(
        model, state, directory / WEIGHTS_NAME, f"the weights of the PrefixLM in {CONFIG_NAME}"
    )
    model.vocab = vocab
    return model.to(device).eval()
