"""Load Meta's official EnCodec checkpoints from a local file (never downloaded here).

The ``encodec`` package fetches ``encodec_24khz-d7cc33bc.th`` from the internet; a user who
already has that file passes its path instead. It is a torch-pickled state dict of
``EncodecModel``: we read it with ``torch.load(weights_only=True)``, which refuses code, and
check the sha256 prefix that its file name carries, as the package does.

The 24 kHz model has the same SEANet strides (320 samples per frame), so it runs at 75 Hz:
2.125 s → 159 frames; it stores 32 RVQ levels of 1,024 codes, of which the first ``levels``
(default 4, 3 kbps) are used, so 2.125 s → 159 × 4 = 636 tokens.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import torch

from videopoet.core.declarations import AudioTokenizerSpec
from videopoet.core.errors import ConfigError
from videopoet.plugins.encodec_audio.model import EncodecConfig, EncodecTokenizer, parse_config

#: The geometry of ``EncodecModel.encodec_model_24khz`` (encodec 0.1.1).
OFFICIAL_24KHZ = dict(
    name="encodec24k",
    sample_rate=24_000,
    channels=1,
    ratios=(8, 5, 4, 2),
    n_filters=32,
    dimension=128,
    n_residual_layers=1,
    lstm=2,
    causal=True,
    norm="weight_norm",
    codebook_size=1024,
    stored_levels=32,
)
_CHECKSUMMED = re.compile(r".*-([0-9a-f]{8})$")


def read_official_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in an official ``.th`` file, after the file-name checksum if any."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("checkpoint", str(path), "an existing EnCodec .th file")
    match = _CHECKSUMMED.fullmatch(path.stem)
    if match:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if not digest.startswith(match.group(1)):
            raise ConfigError(
                "checkpoint", str(path), f"a file whose sha256 starts with {match.group(1)}"
            )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt file or one that holds code
        raise ConfigError(
            "checkpoint", str(path), f"a torch state dict readable with weights_only ({exc})"
        ) from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ConfigError("checkpoint", str(path), "a state dict of tensors")
    return state


def official_config(state: dict[str, torch.Tensor], path: Any, levels: int = 4) -> EncodecConfig:
    """The config of the 24 kHz model, checked against the shapes in ``state``."""
    first = state.get("encoder.model.0.conv.conv.weight_v")
    if first is None or first.shape[1] != 1:
        raise ConfigError(
            "checkpoint", str(path), "the official mono 24 kHz EnCodec (encodec_24khz-*.th)"
        )
    stored = len({k.split(".")[3] for k in state if k.startswith("quantizer.vq.layers.")})
    embed = state["quantizer.vq.layers.0._codebook.embed"]
    config = {**OFFICIAL_24KHZ, "stored_levels": stored, "codebook_size": embed.shape[0]}
    return parse_config({**config, "dimension": embed.shape[1], "levels": levels})


def load_checkpoint(
    path: str | os.PathLike, levels: int = 4, device: str | torch.device = "cpu", **_: Any
) -> EncodecTokenizer:
    """A tokenizer from a local checkpoint: our directory format or an official ``.th`` file."""
    path = Path(path)
    if path.is_dir():
        return EncodecTokenizer.from_pretrained(path, device)
    state = read_official_state(path)
    model = EncodecTokenizer(official_config(state, path, levels))
    try:
        model.codec.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(
            "checkpoint", str(path), f"weights of the 24 kHz EnCodec ({str(exc)[:200]})"
        ) from None
    return model.to(device).eval()


def spec_from_checkpoint(path: str | os.PathLike, levels: int = 4) -> AudioTokenizerSpec:
    """The declaration of a local checkpoint (its rate, frame rate and levels), whose factory
    loads it: pass it to ``Vocabulary(tasks, visual, audio_spec)`` so layouts show its counts.
    """
    from videopoet.core.serialization import load_json

    path = Path(path)
    if path.is_dir():
        config = load_json(path / "config.json")
        config.pop("kind", None)
        cfg = parse_config(config)
    else:
        cfg = official_config(read_official_state(path), path, levels)

    def factory(**config: Any) -> EncodecTokenizer:
        return load_checkpoint(path, levels=levels, **config)

    return cfg.spec(factory=factory)
