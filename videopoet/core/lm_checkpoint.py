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

from videopoet.core.errors import ConfigError, VocabularyError
from videopoet.core.serialization import load_json, load_pretrained, save_pretrained
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
    if config.get("kind") != KIND or "model" not in config:
        raise ConfigError("directory", str(directory), f"a {KIND} checkpoint (config.json)")
    model_config = ModelConfig(**config["model"])
    table = load_json(directory / TOKENS_NAME)
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
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(
            "weights", f"missing {missing[:5]}, unexpected {unexpected[:5]}", "a PrefixLM"
        )
    model.vocab = vocab
    return model.to(device).eval()
