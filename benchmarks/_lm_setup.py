"""Setup shared by the prefix-LM benchmarks: model flags, threads, the model and its summary."""

from __future__ import annotations

import argparse
import os

import torch

from videopoet.core.model import ModelConfig, PrefixLM
from videopoet.core.plugins import get_registry
from videopoet.core.vocabulary import Vocabulary


def add_model_args(
    parser: argparse.ArgumentParser, layers: int, width: int, heads: int, threads: int = 0
) -> None:
    parser.add_argument("--layers", type=int, default=layers)
    parser.add_argument("--width", type=int, default=width)
    parser.add_argument("--heads", type=int, default=heads)
    parser.add_argument(
        "--threads",
        type=int,
        default=threads,
        help=f"torch threads for every figure of the run (0: all {os.cpu_count()} cores; "
        f"default {threads}). On a shared machine a thread that gets preempted stalls every "
        "parallel op: measure with all cores when the machine is otherwise idle.",
    )


def set_threads(threads: int) -> int:
    """Set torch's intra-op threads (0: one per core); the number set."""
    torch.set_num_threads(threads or os.cpu_count() or 1)
    return torch.get_num_threads()


def build_model(
    args: argparse.Namespace, vocab: Vocabulary | None = None
) -> tuple[PrefixLM, ModelConfig, Vocabulary]:
    """Set threads and seed, then a model of the flags' shape over ``vocab`` (default: the
    real vocabulary of the installed plugins)."""
    set_threads(args.threads)
    torch.manual_seed(0)
    vocab = vocab or Vocabulary.from_registry(get_registry())
    config = ModelConfig.preset(
        "small",
        vocab_size=vocab.size,
        d_model=args.width,
        n_layers=args.layers,
        n_heads=args.heads,
        attention="sdpa",
        grid_positions=False,  # the architecture mapped one-to-one onto HF's Llama
    )
    model = PrefixLM(config)
    print(
        f"model: {model.num_parameters() / 1e6:.1f}M parameters ({config.n_layers} layers, "
        f"d_model {config.d_model}, {config.n_heads} heads, vocabulary {vocab.size:,}); "
        f"threads {torch.get_num_threads()}"
    )
    return model, config, vocab
