"""Decoding speed: KV cache vs recomputing every step vs Hugging Face Llama with its cache.

Generates one paper-format text-to-video target (17 frames at 128×128: ``<bov_o>``, 1,280
visual tokens, ``<eov_o>``, ``<eos>``) after a prefix with 64 text slots, greedily, with the
real 266,496-id vocabulary, on this machine's CPU, and prints tokens/s of

(a) this project: one prefill, then token by token with the preallocated KV cache;
(b) the same model recomputing the whole sequence at every step;
(c) ``transformers``' ``LlamaForCausalLM`` with the same depth, width, heads, MLP width and
    vocabulary, holding the same weights (checked: same logits on a causal sequence),
    generating the same number of tokens with its own cache (``model.generate``).

(b) is too slow to run in full (about a second per step), so it is timed at evenly spaced
steps of the same sequence and the sum over all steps is estimated from them; the output
says so. Usage: ``python benchmarks/decode.py [--layers 8 --width 384 --heads 6]``.
The last line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _lm_setup import add_model_args, build_model  # a sibling module of these scripts

from videopoet.core.declarations import Format
from videopoet.core.generation import generate
from videopoet.core.model import PrefixLM
from videopoet.core.plugins import get_registry
from videopoet.sequences.layout import build_layout


def hf_llama(model: PrefixLM):
    """A LlamaForCausalLM with the same shapes, loaded with ``model``'s weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    c = model.config
    config = LlamaConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.d_model,
        intermediate_size=c.hidden_dim,
        num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads,
        num_key_value_heads=c.n_heads,
        max_position_embeddings=c.max_seq_len,
        rms_norm_eps=c.norm_eps,
        rope_theta=c.rope_theta,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
    )
    hf = LlamaForCausalLM(config).eval()
    d = c.d_model
    state = {
        "model.embed_tokens.weight": model.embed.weight,
        "model.norm.weight": model.norm.weight,
        "lm_head.weight": model.head.weight.t(),
    }
    for i, block in enumerate(model.blocks):
        qkv = block.attn.qkv.weight.t()
        gate, up = block.mlp.gate_up.weight.t().split(c.hidden_dim)
        prefix = f"model.layers.{i}."
        state |= {
            prefix + "input_layernorm.weight": block.attn_norm.weight,
            prefix + "post_attention_layernorm.weight": block.mlp_norm.weight,
            prefix + "self_attn.q_proj.weight": qkv[:d],
            prefix + "self_attn.k_proj.weight": qkv[d : 2 * d],
            prefix + "self_attn.v_proj.weight": qkv[2 * d :],
            prefix + "self_attn.o_proj.weight": block.attn.out.weight.t(),
            prefix + "mlp.gate_proj.weight": gate,
            prefix + "mlp.up_proj.weight": up,
            prefix + "mlp.down_proj.weight": block.mlp.down.weight.t(),
        }
    hf.load_state_dict({k: v.detach().contiguous() for k, v in state.items()}, strict=True)
    return hf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser, layers=8, width=384, heads=6)
    parser.add_argument("--recompute-samples", type=int, default=16)
    args = parser.parse_args()
    model, config, vocab = build_model(args)
    model.eval()
    params = model.num_parameters()
    registry = get_registry()
    task = registry.task("t2v")
    layout = build_layout(task, vocab, Format(frames=17, height=128, width=128))
    prefix, target = layout.prefix_length, layout.target_length
    text = torch.randn(1, layout.text_span.length, config.text_dim)
    print(f"sequence: prefix {prefix} (64 text slots), target {target} tokens (1,280 visual)")

    # (a) KV cache
    with torch.inference_mode():  # warm-up: a prefill and a few steps
        cache = model.new_cache(1, prefix + 8)
        hidden = model.hidden_states(
            torch.zeros(1, prefix, dtype=torch.long), prefix, text, cache=cache
        )
        for _ in range(8):
            model.logits_slice(hidden[:, -1] if hidden.dim() == 3 else hidden, 256, 262400)
            hidden = model.decode_step(torch.zeros(1, dtype=torch.long), cache)
    start = time.perf_counter()
    ids = generate(model, layout, vocab, text_embeddings=text, temperature=0, progress=False)
    time_cache = time.perf_counter() - start
    layout.split(ids)  # the result decodes
    tps_cache = target / time_cache
    print(f"(a) KV cache:  {time_cache:7.1f} s  {tps_cache:8.2f} tokens/s")

    # (b) recompute the whole sequence for each step, timed at evenly spaced steps
    sequence = torch.cat(
        [layout.fill({"visual_out": torch.zeros(1, 1280, dtype=torch.long)})[:, :prefix], ids],
        dim=1,
    )
    steps = torch.linspace(0, target - 1, args.recompute_samples).round().long().tolist()
    costs = []
    with torch.inference_mode():
        for step in steps:
            begin = time.perf_counter()
            hidden = model.hidden_states(sequence[:, : prefix + step], prefix, text)[:, -1]
            lo, hi = layout.allowed[prefix + step] if layout.tokens[prefix + step] < 0 else (0, 0)
            if hi > lo:
                model.logits_slice(hidden, lo, hi).argmax(-1)
            costs.append(time.perf_counter() - begin)
    # step costs grow smoothly with length: integrate the sampled curve over all steps
    time_recompute = float(
        torch.trapezoid(torch.tensor(costs), torch.tensor(steps, dtype=torch.float64))
    )
    time_recompute += (costs[0] + costs[-1]) / 2  # trapezoid covers target-1 intervals
    tps_recompute = target / time_recompute
    print(
        f"(b) recompute: {time_recompute:7.1f} s  {tps_recompute:8.2f} tokens/s  "
        f"(ESTIMATED: {len(steps)} of {target} steps timed, evenly spaced, integrated)"
    )

    # (c) Hugging Face Llama, same shapes and weights, its own cache
    hf = hf_llama(model)
    with torch.inference_mode():
        probe = torch.randint(0, vocab.size, (1, 32))
        ours = model(probe, 0)
        theirs = hf(probe).logits
        agree = float((ours - theirs).abs().max())
    print(f"same model check: max |logit difference| on a causal sequence = {agree:.2e}")
    prompt = sequence[:, :prefix]
    options = dict(
        max_new_tokens=target,
        min_new_tokens=target,
        do_sample=False,
        use_cache=True,
        pad_token_id=0,
    )
    with torch.inference_mode():
        hf.generate(prompt, max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0)
        start = time.perf_counter()
        out = hf.generate(prompt, **options)
        time_hf = time.perf_counter() - start
    generated = out.shape[1] - prefix
    if generated != target:
        raise RuntimeError(f"transformers generated {generated} tokens, not {target}")
    tps_hf = target / time_hf
    print(f"(c) HF Llama:  {time_hf:7.1f} s  {tps_hf:8.2f} tokens/s")
    print(
        f"a/b = {tps_cache / tps_recompute:.1f}x (goal >= 10)   "
        f"a/c = {tps_cache / tps_hf:.2f}x (goal >= 1.2)"
    )
    print(
        json.dumps(
            {
                "tokens": target,
                "params": params,
                "threads": torch.get_num_threads(),
                "tokens_per_s_cache": round(tps_cache, 3),
                "tokens_per_s_recompute": round(tps_recompute, 3),
                "recompute_estimated_from_steps": len(steps),
                "tokens_per_s_hf": round(tps_hf, 3),
                "speedup_vs_recompute": round(tps_cache / tps_recompute, 2),
                "speedup_vs_hf": round(tps_cache / tps_hf, 2),
                "hf_same_weights_max_logit_diff": agree,
            }
        )
    )


if __name__ == "__main__":
    main()
