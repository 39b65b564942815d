"""Setup shared by the prefix-LM benchmarks: model flags, threads, the model and its summary."""

from __future__ import annotations

import argparse

import torch

from videopoet.core.model import ModelConfig, PrefixLM
from videopoet.core.plugins import get_registry
from videopoet.core.vocabulary import Vocabulary


def add_model_args(parser: argparse.ArgumentParser, layers: int, width: int, heads: int) -> None:
    parser.add_argument("--layers", type=int, default=layers)
    parser.add_argument("--width", type=int, default=width)
    parser.add_argument("--heads", type=int, default=heads)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for every figure of the run (0: all cores). One by default: on a "
        "shared machine a second thread that gets preempted stalls every parallel op.",
    )


def build_model(args: argparse.Namespace) -> tuple[PrefixLM, ModelConfig, Vocabulary]:
    """Set threads and seed, then a model of the flags' shape over the real vocabulary."""
    torch.set_num_threads(args.threads or torch.get_num_threads())
    torch.manual_seed(0)
    vocab = Vocabulary.from_registry(get_registry())
    config = ModelConfig.preset(
        "small",
        vocab_size=vocab.size,
        d_model=args.width,
        n_layers=args.layers,
        n_heads=args.heads,
        attention="sdpa",
    )
    model = PrefixLM(config)
    print(
        f"model: {model.num_parameters() / 1e6:.1f}M parameters ({config.n_layers} layers, "
        f"d_model {config.d_model}, {config.n_heads} heads, vocabulary {vocab.size:,}); "
        f"threads {torch.get_num_threads()}"
    )
    return model, config, vocab
