"""``videopoet train-tokenizer CONFIG.yaml [key=value ...]``: train any registered tokenizer.

The YAML names a registered tokenizer and holds four sections::

    tokenizer: magvit2_tiny        # a registered tokenizer name (visual or audio)
    init_from: checkpoints/...     # optional: start from saved weights (fine-tuning)
    freeze: [encoder, quantizer]   # optional: parts kept as they are (a decoder fine-tune)
    network: {...}                 # keyword arguments of the tokenizer's factory
    data: {...}                    # the dataset; validated by the tokenizer's adapter
    loss: {...}                    # loss weights; validated by the tokenizer's adapter
    train: {...}                   # videopoet.core.training.TrainConfig

``key=value`` overrides use omegaconf's dotlist syntax (``train.steps=50``). Every section is
validated with ``extra="forbid"``: a misspelled key is a :class:`ConfigError` naming its dotted
path (``data.frame``), with the close matches.

How a tokenizer plugs in (no registry to edit): ``spec.factory(**network)`` builds the
network, and the network object has a method

``training_adapter(data: dict, loss: dict, train: TrainConfig) -> TrainingAdapter``

returning an object with the attributes of :class:`TrainingAdapter`: the module to optimize
(it may wrap the tokenizer, e.g. with a GAN critic), ``loss_fn(model, batch)``,
``batches(step)``, an optional ``eval_fn(model)``, the ``model_config`` saved with every
checkpoint, and ``finish(model, out_dir)`` that writes the final pretrained tokenizer and
returns extra figures for the result. :func:`validate_section` turns a raw section into a
pydantic model with errors named by path; adapters use it for ``data`` and ``loss``.

Same config, same run: everything is seeded from ``train.seed`` before the network is built.
The whole config is recorded in ``out_dir/train_config.json``; resuming with another
``tokenizer``, ``network``, ``data`` or ``loss`` (or learning rate ...) is a :class:`ConfigError`
naming the fields, checked before anything is built (``train.allow_config_change=true``
accepts the change; see :mod:`videopoet.core.training`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from videopoet.core.errors import ConfigError
from videopoet.core.training import (
    TrainConfig,
    barrier,
    check_resume_config,
    ensure_out_dir,
    is_main_process,
    prepare_run,
    train,
)

M = TypeVar("M", bound=BaseModel)


class TrainingAdapter(Protocol):
    model: torch.nn.Module
    model_config: dict[str, Any] | None

    def loss_fn(self, model: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]: ...

    def batches(self, step: int) -> Any: ...

    def eval_fn(self, model: torch.nn.Module) -> dict[str, float]: ...

    def finish(self, model: torch.nn.Module, out_dir: Path) -> dict[str, Any]: ...


class TokenizerTrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokenizer: str
    #: a saved tokenizer folder (config.json + model.safetensors) whose weights start a fresh
    #: run (fine-tuning); a resumed run continues from its own checkpoint instead
    init_from: str | None = None
    #: submodules of the network whose weights stay as they are (``[encoder, quantizer]``:
    #: a decoder fine-tune, which keeps every token id: an LM or refiner trained on the old
    #: tokens reads the new ones the same, but shards and stages still name the whole
    #: tokenizer by its weights, so they are made again, with the same ids)
    freeze: list[str] = Field(default_factory=list)
    network: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)
    loss: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)


def validate_section(model: type[M], values: Any, path: str) -> M:
    """``model.model_validate(values)``, raising ConfigError that names ``path.field``."""
    try:
        return model.model_validate(values or {})
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = ".".join(str(p) for p in error["loc"])
        field = f"{path}.{loc}" if path and loc else path or loc
        expected = error["msg"]
        if error["type"] == "extra_forbidden":
            import difflib

            known = _fields_at(model, error["loc"][:-1])
            close = difflib.get_close_matches(str(error["loc"][-1]), known, n=3)
            expected = f"one of {', '.join(known)}" + (
                f" (did you mean {', '.join(close)}?)" if close else ""
            )
        raise ConfigError(field, error.get("input"), expected) from exc


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the (possibly nested) model section at ``loc``."""
    import typing

    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            break
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            break
        model = nested[0]
    return list(model.model_fields)


def apply_overrides(config: Any, overrides: list[str]) -> Any:
    """``key=value`` overrides on an OmegaConf config, in order. A dotted key changes one field
    (``train.steps=5``); a whole mapping given as the value *replaces* that section
    (``mixture={a2v: 1, v2a: 1}`` trains on those two tasks only), as one would read it: merged,
    the config's other tasks would stay in the mixture."""
    from omegaconf import DictConfig, OmegaConf

    for override in overrides:
        key = override.split("=", 1)[0].strip()
        single = OmegaConf.from_dotlist([override])
        value = OmegaConf.select(single, key)
        if isinstance(value, DictConfig):
            OmegaConf.update(config, key, value, merge=False)
        else:
            config = OmegaConf.merge(config, single)
    return config


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, Any]:
    """YAML + dotlist overrides → plain dict (omegaconf interpolations resolved); a mapping
    given whole replaces its section (:func:`apply_overrides`).

    A file that is missing, unreadable, not UTF-8 or not valid YAML is a :class:`ConfigError`
    naming the file (and the line, for a YAML syntax error); a bad override names the override.
    """
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = Path(path)
    if not path.is_file():
        raise ConfigError("config", str(path), "an existing YAML file")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError("config", str(path), f"a readable YAML file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            "config",
            str(path),
            f"a UTF-8 text file (byte {exc.object[exc.start]:#04x} at offset {exc.start} is not "
            "UTF-8; save the file as UTF-8)",
        ) from None
    try:
        config = OmegaConf.create(text)
    except (yaml.YAMLError, OmegaConfBaseException) as exc:
        raise ConfigError("config", str(path), f"valid YAML ({_one_line(exc)})") from None
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError("override", bad[0], "key=value (e.g. train.steps=100)")
        try:
            config = apply_overrides(config, overrides)
        except (yaml.YAMLError, OmegaConfBaseException) as exc:
            shown = " ".join(overrides)
            raise ConfigError(
                "override", shown, f"valid key=value pairs ({_one_line(exc)})"
            ) from None
    try:
        raw = OmegaConf.to_container(config, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError("config", str(path), f"valid YAML ({_one_line(exc)})") from None
    if not isinstance(raw, dict):
        raise ConfigError("config", str(path), "a YAML mapping with tokenizer, network, ...")
    return raw


def _one_line(exc: Exception) -> str:
    """An error's message on one line (YAML errors span several, with a source excerpt)."""
    text = str(exc).replace('in "<unicode string>", ', "")  # the file is named beside it
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines[:4]) or type(exc).__name__


def train_tokenizer(raw: dict[str, Any]) -> dict[str, Any]:
    """Train from an already loaded config dict; returns the trainer's result + adapter figures."""
    from videopoet.core.plugins import get_registry

    config = validate_section(TokenizerTrainingConfig, raw, "")
    train_config = validate_section(TrainConfig, config.train, "train")
    spec = get_registry().tokenizer(config.tokenizer)
    if spec.factory is None:
        raise ConfigError("tokenizer", config.tokenizer, "a tokenizer that declares a factory")
    # Recorded in train_config.json beside ``train``; checked first, so resuming with another
    # network or data fails here and not in a size mismatch after the data is loaded.
    run_config = config.model_dump(mode="json", exclude={"train"})
    check_resume_config(train_config, run_config)
    ensure_out_dir(train_config.out_dir)  # before the adapter, which may write there
    prepare_run(train_config)  # the network's initial weights come from train.seed
    network = spec.factory(**config.network)
    if config.init_from is not None:
        _load_initial_weights(network, config.init_from)
    freeze_submodules(network, config.freeze)
    make_adapter = getattr(network, "training_adapter", None)
    if make_adapter is None:
        raise ConfigError(
            "tokenizer", config.tokenizer, "a tokenizer whose network has training_adapter()"
        )
    adapter = make_adapter(config.data, config.loss, train_config)
    out_dir = Path(train_config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = train(
        adapter.model,
        adapter.loss_fn,
        adapter.batches,
        train_config,
        eval_fn=getattr(adapter, "eval_fn", None),
        model_config=adapter.model_config,
        run_config=run_config,
    )
    if is_main_process():  # under torchrun rank 0 holds the trained weights and writes
        result.update(adapter.finish(adapter.model, out_dir))
    barrier()
    return result


def _load_initial_weights(network: torch.nn.Module, directory: str) -> None:
    from videopoet.core.serialization import WEIGHTS_NAME, load_tensors

    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise ConfigError("init_from", directory, f"a tokenizer folder holding {WEIGHTS_NAME}")
    try:
        network.load_state_dict(load_tensors(path, "cpu"))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError("init_from", directory, f"weights of this network ({first})") from None


def freeze_submodules(network: torch.nn.Module, names: list[str]) -> None:
    """Stop the gradient of each named submodule's parameters (``encoder``, ``decoder.blocks``);
    an unknown name is a :class:`ConfigError` listing the network's top-level parts, and
    freezing everything leaves nothing to train, also an error."""
    for name in names:
        try:
            part = network.get_submodule(name)
        except AttributeError:
            known = ", ".join(n for n, _ in network.named_children())
            raise ConfigError("freeze", name, f"a part of the network ({known})") from None
        for parameter in part.parameters():
            parameter.requires_grad_(False)
    if names and not any(p.requires_grad for p in network.parameters()):
        raise ConfigError("freeze", names, "at least one part left to train")


def train_tokenizer_from_yaml(path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """The ``videopoet train-tokenizer CONFIG.yaml [key=value ...]`` entry."""
    return train_tokenizer(load_config(path, overrides))


def main(argv: list[str] | None = None) -> int:
    """``python -m videopoet.core.tokenizer_training CONFIG.yaml [key=value ...]``; the last
    printed line is the result as one JSON object."""
    import json
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m videopoet.core.tokenizer_training CONFIG.yaml [key=value ...]")
        return 2
    result = train_tokenizer_from_yaml(args[0], args[1:])
    print(json.dumps(result, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
