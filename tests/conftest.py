"""Shared fixtures: the installed registry, the default vocabulary, and a tiny vocabulary;
``load_benchmark`` imports a script of benchmarks/ as a module."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from videopoet.core.declarations import AudioTokenizerSpec, VisualTokenizerSpec
from videopoet.core.plugins import get_registry
from videopoet.core.vocabulary import Vocabulary


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark("name")``: benchmarks/name.py as a module (its functions, not main)."""
    root = Path(__file__).resolve().parents[1] / "benchmarks"

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, root / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def registry():
    return get_registry()


@pytest.fixture(scope="session")
def vocab(registry):
    return Vocabulary.from_registry(registry)


@pytest.fixture(scope="session")
def tiny_vocab(registry):
    """6-bit visual codebook and 2 × 16 audio codes: for tiny models."""
    return Vocabulary(
        registry.tasks.values(),
        VisualTokenizerSpec(name="tiny_visual", codebook_bits=6),
        AudioTokenizerSpec(name="tiny_audio", levels=2, codebook_size=16),
    )


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and two threads on a busy machine stall."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """An untrained tiny bundle (the committed tiny tokenizers), written as `videopoet init`
    writes it."""
    from videopoet.cli_generate import TINY_AUDIO, TINY_VISUAL
    from videopoet.core.engine import Engine

    path = tmp_path_factory.mktemp("bundle") / "tiny"
    Engine.create(preset="tiny", visual_dir=TINY_VISUAL, audio_dir=TINY_AUDIO).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_engine(tiny_bundle):
    from videopoet.core.engine import Engine

    return Engine.from_pretrained(tiny_bundle)


@pytest.fixture(scope="session")
def save_tiny_t5():
    """``save(folder, words, num_layers=1)``: a tiny randomly initialised T5 encoder (width 32,
    seed 0) and a word-level tokenizer over ``words`` (the first three ``<pad>``, ``</s>``,
    ``<unk>``), saved into ``folder`` the way a user's local T5 is; returns ``folder``."""

    def save(folder: Path, words: list[str], num_layers: int = 1) -> Path:
        from tokenizers import Tokenizer, models, pre_tokenizers, processors
        from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

        tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", special_tokens=[("</s>", 1)]
        )
        PreTrainedTokenizerFast(
            tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
        ).save_pretrained(folder)
        config = T5Config(
            vocab_size=len(words), d_model=32, d_kv=8, num_heads=2, num_layers=num_layers, d_ff=64
        )
        torch.manual_seed(0)
        T5EncoderModel(config).save_pretrained(folder)
        return folder

    return save
