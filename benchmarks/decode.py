"""Decoding speed of the prefix LM against its physical limit, recomputation and HF Llama.

Greedy decoding with the real 266,496-id vocabulary on this machine's CPU, the model's shape
from the flags (default 8 layers, d_model 384, 6 heads: 219 M parameters, 205 M of them the
embedding and the output head). Everything below is measured in this one run.

1. **Roofline.** Cached decoding reads every weight once per token (the embedding one row,
   the output head only over the active modality's slice, 384 × 262,144 here: 87 % of the
   bytes) plus the KV cache so far, and does two FLOPs per weight read: it is bound by memory
   bandwidth, not compute.
   ``roofline_fraction`` = (bytes of weights and KV cache read per token × tokens/s) / the copy
   bandwidth measured in the same run (``Tensor.copy_`` of a 512 MiB buffer, bytes read +
   written, the best over the thread counts used). Each variant also gets the share of its
   time some task waited for a CPU (Linux PSI): more than a few percent means another
   process disturbed it.
2. **Variants** of cached decoding of one paper-format text-to-video target (17 frames at
   128×128: ``<bov_o>``, 1,280 visual tokens, ``<eov_o>``, ``<eos>``, after a prefix with 64
   text slots), each with its tokens/s and roofline fraction: the library's ``generate`` in
   float32 on one thread and on all cores; the model cast to bfloat16 (half the bytes);
   bfloat16 with oneDNN-packed weights and a static cache (``_static_decode.py``), eager and
   under ``torch.compile``. On this CPU the stock bfloat16 matrix-vector kernels are slower
   than float32 ones despite reading half the bytes; oneDNN's packed kernels are not. The
   bytes counted are those the computation needs: a static cache attends over the whole
   preallocated cache, which reads about 3 % more on this target.
3. **Recomputation**, measured in full (not estimated): the library's ``generate(...,
   use_cache=False)`` against ``generate`` on the same video target (about 3 minutes with
   both cores here; ``--recompute-task t2i`` uses a 258-token text-to-image target instead,
   about 12 s). Recomputation is compute-bound (its GFLOP/s are printed) and cached decoding
   bandwidth-bound, so their ratio grows with the target length and moves with the
   machine's FLOPs-to-bandwidth balance; the roofline fraction does not.
4. **Hugging Face** ``LlamaForCausalLM`` with the same depth, width, heads, MLP width,
   vocabulary and weights (checked: same logits on a causal sequence), ``generate`` with its
   own cache, on the video target. The gain over it is split, by timing the weight
   matrix-vector products of one step both ways, into (i) the output head: ours is stored
   input-major (``x @ W``, streamed row by row) and read only over the 262,144 visual ids,
   HF's ``nn.Linear`` is ``(out, in)`` over all 266,496; (ii) the transformer's weights
   (HF: seven unfused ``nn.Linear`` per layer, ours four fused input-major matrices); and
   (iii) the rest, HF's other per-step costs (``generate``'s loop, logits processors, its
   dynamic cache's concatenations, its attention and norms). Measured here with both cores
   over three runs (``benchmarks/README.md``): 1.30× to 1.35× HF's tokens/s, 6 to 7 ms less
   per token, of which the head's layout and slice make a third to a half (34 to 49 %), the
   other weights 0 to 3 %, and HF's other per-step costs the rest (48 to 66 %).

Usage: ``python benchmarks/decode.py [--threads 0] [--recompute-task t2v] [--layers 8
--width 384 --heads 6] [--skip-compile] [--skip-hf]`` (about 8 minutes here). The last line
is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time

import torch
from _lm_setup import add_model_args, build_model, set_threads  # sibling modules
from _static_decode import StaticDecoder

from videopoet.core.declarations import Format
from videopoet.core.generation import generate
from videopoet.core.model import ModelConfig, PrefixLM
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


# --------------------------------------------------------------------------- what is read


def copy_bandwidth(mib: int, repeats: int = 5) -> float:
    """Best GB/s of ``Tensor.copy_`` of a ``mib`` MiB buffer (bytes read + written)."""
    src = torch.ones(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(_timed_once(lambda: dst.copy_(src)) for _ in range(repeats))
    return 2 * src.numel() * 4 / best / 1e9


def cpu_stall_us() -> int | None:
    """Microseconds that some runnable task waited for a CPU, since boot (Linux PSI), or None.

    Its growth over a measurement, divided by the wall time, tells whether another process
    competed for the cores meanwhile: a variant measured with a stall share of more than a
    few percent was disturbed."""
    try:
        with open("/proc/pressure/cpu") as handle:
            return int(handle.readline().split("total=")[1])
    except (OSError, IndexError, ValueError):
        return None


def _timed_once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def decode_bytes(config: ModelConfig, layout, element: int, rows: int = 1) -> int:
    """Bytes of weights and KV cache one greedy ``generate`` of ``layout`` must read.

    The prefill reads the transformer's weights once; then each target position reads the
    head's slice for its range when it is content (a forced token reads none), and each
    ``decode_step`` reads every block's weights, one embedding row and the keys and values
    cached so far (the new position's included)."""
    d, f, n = config.d_model, config.hidden_dim, config.n_layers
    body = n * (4 * d * d + 3 * d * f + 2 * d) + d
    prefix, target = layout.prefix_length, layout.target_length
    total = body
    for step in range(target):
        position = prefix + step
        if layout.tokens[position] < 0:
            lo, hi = layout.allowed[position]
            total += d * (hi - lo)
        if step + 1 < target:
            total += body + d + 2 * n * rows * d * (position + 1)
    return total * element


def recompute_flops(config: ModelConfig, layout) -> float:
    """FLOPs of ``generate(use_cache=False)``: every step a forward over the sequence so far
    (weights, attention scores and values) and the head's slice at content positions."""
    d, f, n = config.d_model, config.hidden_dim, config.n_layers
    body = n * (4 * d * d + 3 * d * f)
    total = 0.0
    for step in range(layout.target_length):
        length = layout.prefix_length + step
        total += 2 * body * length + 4 * n * d * length**2
        if layout.tokens[length] < 0:
            lo, hi = layout.allowed[length]
            total += 2 * d * (hi - lo)
    return total


# --------------------------------------------------------------------------- decoders


def prompt_of(layout) -> torch.Tensor:
    filled = {s.name: torch.zeros(1, s.length, dtype=torch.long) for s in layout.content_spans}
    return layout.fill(filled)[:, : layout.prefix_length]


def library_decode(model: PrefixLM, layout, text: torch.Tensor, use_cache: bool = True):
    """The library's greedy ``generate``, after a short warm-up: (seconds, ids)."""
    prefix = layout.prefix_length
    with torch.inference_mode():  # warm-up: a prefill and a few steps
        cache = model.new_cache(1, prefix + 8)
        model.hidden_states(
            prompt_of(layout), prefix, text.to(model.embed.weight.dtype), cache=cache
        )
        for _ in range(8):
            hidden = model.decode_step(torch.zeros(1, dtype=torch.long), cache)
            model.logits_slice(hidden, 256, 262400)
    start = time.perf_counter()
    ids = generate(
        model,
        layout,
        text_embeddings=text.to(model.embed.weight.dtype),
        temperature=0,
        use_cache=use_cache,
        progress=False,
    )
    return time.perf_counter() - start, ids


def static_decode(decoder: StaticDecoder, prefill: PrefixLM, layout, text, step, limit=None):
    """Greedy decoding as ``generate`` does it, the steps through ``step`` (the decoder or
    its compiled form): (seconds, ids). ``limit`` stops early (a warm-up)."""
    prefix, target = layout.prefix_length, layout.target_length
    start = time.perf_counter()
    with torch.no_grad():
        cache = prefill.new_cache(1, prefix)
        hidden = prefill.hidden_states(
            prompt_of(layout), prefix, text.to(decoder.dtype), cache=cache
        )[:, -1]
        decoder.load_prefill(cache.keys, cache.values, prefix)
        valid = torch.zeros(1, prefix + target, dtype=torch.bool)
        valid[:, :prefix] = True
        out = torch.empty(1, target, dtype=torch.long)
        for i in range(target if limit is None else limit):
            position = prefix + i
            forced = layout.tokens[position]
            if forced >= 0:
                chosen = torch.tensor([forced])
            else:
                lo, hi = layout.allowed[position]
                chosen = decoder.logits(hidden, lo, hi).argmax(-1) + lo
            out[:, i] = chosen
            if i + 1 == target:
                break
            valid[:, position] = True
            hidden = step(chosen, torch.tensor([position]), valid)
    return time.perf_counter() - start, out


def teacher_forced_gap(decoder, step, prefill, reference: PrefixLM, layout, text, ids, steps=32):
    """Over the first ``steps`` positions fed ``ids``: max |logit - reference logit| relative
    to the reference's largest |logit|, and how often the argmax agrees."""
    prefix = layout.prefix_length
    lo, hi = layout.allowed[prefix + 1]
    with torch.no_grad():
        ref_cache = reference.new_cache(1, prefix + steps + 1)
        ref_hidden = reference.hidden_states(prompt_of(layout), prefix, text, cache=ref_cache)[
            :, -1
        ]
        cache = prefill.new_cache(1, prefix)
        hidden = prefill.hidden_states(
            prompt_of(layout), prefix, text.to(decoder.dtype), cache=cache
        )[:, -1]
        decoder.load_prefill(cache.keys, cache.values, prefix)
        valid = torch.zeros(1, prefix + layout.target_length, dtype=torch.bool)
        valid[:, :prefix] = True
        gaps, agree = [], 0
        for i in range(1, steps + 1):  # position prefix + i is visual content
            fed = ids[:, i - 1]
            valid[:, prefix + i - 1] = True
            hidden = step(fed, torch.tensor([prefix + i - 1]), valid)
            ref_hidden = reference.decode_step(fed, ref_cache)
            ours = decoder.logits(hidden, lo, hi).float()
            theirs = reference.logits_slice(ref_hidden, lo, hi)
            gaps.append(float((ours - theirs).abs().max() / theirs.abs().max()))
            agree += int(ours.argmax() == theirs.argmax())
    return max(gaps), agree / steps


# --------------------------------------------------------------------------- HF comparison


def median_time(fn, repeats: int = 15) -> float:
    fn()
    return statistics.median(_timed_once(fn) for _ in range(repeats))


def weight_products(model: PrefixLM, hf, lo: int, hi: int) -> dict[str, float]:
    """Seconds of one step's weight matrix-vector products, ours and HF's, head and body."""
    x = torch.randn(1, model.config.d_model)
    wide = torch.randn(1, model.config.hidden_dim)
    with torch.inference_mode():
        ours_head = median_time(lambda: model.logits_slice(x, lo, hi))
        hf_head = median_time(lambda: hf.lm_head(x))

        def ours_body():
            for block in model.blocks:
                block.attn.qkv(x), block.attn.out(x), block.mlp.gate_up(x), block.mlp.down(wide)

        def hf_body():
            for layer in hf.model.layers:
                a, m = layer.self_attn, layer.mlp
                a.q_proj(x), a.k_proj(x), a.v_proj(x), a.o_proj(x)
                m.gate_proj(x), m.up_proj(x), m.down_proj(wide)

        return {
            "ours_head": ours_head,
            "hf_head": hf_head,
            "ours_body": median_time(ours_body),
            "hf_body": median_time(hf_body),
        }


def hf_decode(hf, layout) -> float:
    prompt, target = prompt_of(layout), layout.target_length
    options = dict(do_sample=False, use_cache=True, pad_token_id=0)
    with torch.inference_mode():
        hf.generate(prompt, max_new_tokens=8, min_new_tokens=8, **options)
        start = time.perf_counter()
        out = hf.generate(prompt, max_new_tokens=target, min_new_tokens=target, **options)
        seconds = time.perf_counter() - start
    if out.shape[1] - prompt.shape[1] != target:
        raise RuntimeError(f"transformers generated {out.shape[1] - prompt.shape[1]} tokens")
    return seconds


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser, layers=8, width=384, heads=6, threads=0)
    parser.add_argument(
        "--recompute-task",
        default="t2v",
        choices=("t2v", "t2i"),
        help="the target recomputation is measured on (t2i: 258 tokens, a quick look)",
    )
    parser.add_argument(
        "--copy-mib",
        type=int,
        default=512,
        help="copy buffer for the bandwidth: larger than the caches (a model whose bytes per "
        "token fit in the caches can exceed a roofline fraction of 1)",
    )
    parser.add_argument("--skip-compile", action="store_true", help="no torch.compile variant")
    parser.add_argument("--skip-hf", action="store_true", help="no Hugging Face comparison")
    args = parser.parse_args()
    model, config, vocab = build_model(args)
    model.eval()
    cores = set_threads(args.threads)
    registry = get_registry()
    video = build_layout(registry.task("t2v"), vocab, Format(frames=17, height=128, width=128))
    image = build_layout(registry.task("t2i"), vocab, Format(frames=1, height=128, width=128))
    prefix, target = video.prefix_length, video.target_length
    text = torch.randn(1, video.text_span.length, config.text_dim)
    load_start = os.getloadavg()[0]
    run_stall, run_began = cpu_stall_us(), time.perf_counter()
    print(
        f"video target: prefix {prefix} (64 text slots), target {target} tokens; image target "
        f"{image.target_length}; machine: {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.2f}"
    )

    # 1. the copy bandwidth, on one thread and on all cores
    bandwidth = {}
    for threads in sorted({1, cores}):
        set_threads(threads)
        bandwidth[threads] = copy_bandwidth(args.copy_mib)
    best_bandwidth = max(bandwidth.values())
    print(
        f"copy bandwidth ({args.copy_mib} MiB, read + written): "
        + ", ".join(f"{t} thread{'s' * (t > 1)} {b:.1f} GB/s" for t, b in bandwidth.items())
    )

    # 2. cached decoding of the video target, variant by variant
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    bytes_f32 = decode_bytes(config, video, 4)
    bytes_bf16 = decode_bytes(config, video, 2)
    variants = {}
    reference_ids = None
    stall_mark, time_mark = None, 0.0

    def mark() -> None:
        """Start of a variant's measurement (for its CPU stall share)."""
        nonlocal stall_mark, time_mark
        stall_mark, time_mark = cpu_stall_us(), time.perf_counter()

    def record(name: str, threads: int, seconds: float, nbytes: int, ids, note: str = ""):
        nonlocal stall_mark
        stall = cpu_stall_us()
        stalled = None
        if stall is not None and stall_mark is not None:
            stalled = (stall - stall_mark) / 1e6 / (time.perf_counter() - time_mark)
        tps = target / seconds
        fraction = nbytes / seconds / 1e9 / best_bandwidth
        name = f"{name}, {threads} thread{'s' * (threads > 1)}"
        variants[name] = {
            "threads": threads,
            "tokens_per_s": round(tps, 2),
            "bytes_per_token_mb": round(nbytes / target / 1e6, 1),
            "roofline_fraction": round(fraction, 3),
            "cpu_stall_share": None if stalled is None else round(stalled, 3),
        }
        same = "" if reference_ids is None else f"; first {_agree(ids)} tokens as f32"
        print(
            f"  {name:<43} {seconds:6.1f} s {tps:7.2f} tokens/s "
            f"{nbytes / target / 1e6:6.1f} MB/token {nbytes / seconds / 1e9:5.1f} GB/s "
            f"roofline {fraction:.2f}{same}{note}"
            + ("" if stalled is None else f"; CPU stall {stalled:.0%}")
        )
        mark()

    def _agree(ids) -> int:
        differ = (ids != reference_ids)[0].nonzero()
        return int(differ[0]) if len(differ) else target

    print(f"cached decoding, {target} tokens (roofline: over {best_bandwidth:.1f} GB/s):")
    mark()
    for threads in sorted({1, cores}):
        set_threads(threads)
        seconds, ids = library_decode(model, video, text)
        if reference_ids is None:
            reference_ids = ids
            video.split(ids)  # the result decodes
        record("f32 library generate", threads, seconds, bytes_f32, ids)
    set_threads(cores)
    seconds, ids = library_decode(bf16, video, text)
    record("bf16 library generate", cores, seconds, bytes_bf16, ids)

    set_threads(1)  # as the reference: the same summation order
    exact = StaticDecoder(model, torch.float32, prefix + target)
    _, static_ids = static_decode(exact, model, video, text, exact, limit=48)
    del exact
    static_same = int(min(_agree(static_ids), 48))
    print(f"  static decoder in float32: its first {static_same} of 48 tokens are generate's")
    for threads in sorted({1, cores}):
        set_threads(threads)
        packed = StaticDecoder(model, torch.bfloat16, prefix + target, pack=True)
        static_decode(packed, bf16, video, text, packed, limit=8)
        seconds, ids = static_decode(packed, bf16, video, text, packed)
        record("bf16 packed, static cache", threads, seconds, bytes_bf16, ids)
    gap, agree = teacher_forced_gap(packed, packed, bf16, model, video, text, reference_ids)
    print(
        f"  bf16 vs f32, teacher-forced over 32 steps: max |Δlogit| / max |logit| {gap:.3f}, "
        f"argmax agrees {agree:.0%} (random weights: near-ties are common)"
    )
    compile_s = None
    if not args.skip_compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # weights become constants: oneDNN packs them
        set_threads(cores)
        plain = StaticDecoder(model, torch.bfloat16, prefix + target, pack=False, pack_head=True)
        compiled = torch.compile(plain)
        start = time.perf_counter()
        static_decode(plain, bf16, video, text, compiled, limit=8)
        compile_s = time.perf_counter() - start
        seconds, ids = static_decode(plain, bf16, video, text, compiled)
        record(
            "bf16 static cache, torch.compile",
            cores,
            seconds,
            bytes_bf16,
            ids,
            f" (compiled in {compile_s:.0f} s)",
        )
    best = max(variants, key=lambda k: variants[k]["tokens_per_s"])
    library = variants[f"f32 library generate, {cores} thread{'s' * (cores > 1)}"]
    print(f"fastest: {best}, {variants[best]['tokens_per_s']} tokens/s")

    # 3. recomputation, measured in full on a shorter target
    set_threads(cores)
    short = image if args.recompute_task == "t2i" else video
    short_text = torch.randn(1, short.text_span.length, config.text_dim)
    cached_s, cached_ids = library_decode(model, short, short_text)
    recompute_s, recompute_ids = library_decode(model, short, short_text, use_cache=False)
    n = short.target_length
    flops = recompute_flops(config, short)
    print(
        f"{args.recompute_task} target ({n} tokens), {cores} threads, measured in full: "
        f"cache {n / cached_s:.2f} tokens/s, recompute {n / recompute_s:.2f} tokens/s "
        f"({flops / recompute_s / 1e9:.0f} GFLOP/s: compute-bound): "
        f"{recompute_s / cached_s:.1f}x; same tokens {torch.equal(cached_ids, recompute_ids)}"
    )

    # 4. Hugging Face Llama, same shapes and weights
    hf_figures = {}
    if not args.skip_hf:
        hf = hf_llama(model)
        with torch.inference_mode():
            probe = torch.randint(0, vocab.size, (1, 32))
            logit_diff = float((model(probe, 0) - hf(probe).logits).abs().max())
        print(
            f"HF Llama, same weights: max |logit difference| on a causal sequence {logit_diff:.2e}"
        )
        ours = library
        hf_s = hf_decode(hf, video)
        lo, hi = video.allowed[prefix + 1]
        parts = weight_products(model, hf, lo, hi)
        ours_token, hf_token = 1 / ours["tokens_per_s"], hf_s / target
        gain = hf_token - ours_token
        head = parts["hf_head"] - parts["ours_head"]
        body = parts["hf_body"] - parts["ours_body"]
        print(
            f"  HF generate: {target / hf_s:.2f} tokens/s against {ours['tokens_per_s']} "
            f"(f32 library, {cores} threads): {hf_token * 1e3:.1f} vs {ours_token * 1e3:.1f} ms "
            f"per token, {gain * 1e3:+.1f} ms"
        )
        print(
            f"  head  (one step): HF {parts['hf_head'] * 1e3:.1f} ms (nn.Linear (out, in), all "
            f"{vocab.size:,} ids) vs ours {parts['ours_head'] * 1e3:.1f} ms (input-major, "
            f"{hi - lo:,} visual ids): {head * 1e3:+.1f} ms, {head / gain:.0%} of the gain"
        )
        print(
            f"  body  (one step): HF {parts['hf_body'] * 1e3:.1f} ms (7 nn.Linear per layer) vs "
            f"ours {parts['ours_body'] * 1e3:.1f} ms (4 fused input-major): "
            f"{body * 1e3:+.1f} ms, {body / gain:.0%} of the gain"
        )
        rest = gain - head - body
        print(
            f"  rest: {rest * 1e3:+.1f} ms, {rest / gain:.0%} of the gain (HF's generate loop, "
            "logits processors, dynamic cache, its other ops)"
        )
        hf_figures = {
            "tokens_per_s_hf": round(target / hf_s, 3),
            "speedup_vs_hf": round(ours["tokens_per_s"] * hf_s / target, 2),
            "hf_gain_ms_per_token": round(gain * 1e3, 2),
            "hf_gain_share_head": round(head / gain, 3),
            "hf_gain_share_body": round(body / gain, 3),
            "hf_gain_share_rest": round(rest / gain, 3),
            "hf_same_weights_max_logit_diff": logit_diff,
        }

    print(
        json.dumps(
            {
                "tokens": target,
                "params": model.num_parameters(),
                "threads": cores,
                "load_average_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],
                "cpu_stall_share_run": None
                if run_stall is None
                else round(
                    (cpu_stall_us() - run_stall) / 1e6 / (time.perf_counter() - run_began), 3
                ),
                "copy_bandwidth_gbs": {str(t): round(b, 2) for t, b in bandwidth.items()},
                "tokens_per_s_cache": library["tokens_per_s"],
                "roofline_fraction": library["roofline_fraction"],
                "best_variant": best,
                "tokens_per_s_best": variants[best]["tokens_per_s"],
                "roofline_fraction_best": variants[best]["roofline_fraction"],
                "variants": variants,
                "compile_s": None if compile_s is None else round(compile_s, 1),
                "static_f32_same_tokens_of_48": static_same,
                "bf16_teacher_forced_max_rel_logit_gap": round(gap, 4),
                "bf16_teacher_forced_argmax_agreement": round(agree, 3),
                "recompute_task": args.recompute_task,
                "recompute_tokens": n,
                "tokens_per_s_recompute": round(n / recompute_s, 3),
                "tokens_per_s_cache_same_task": round(n / cached_s, 3),
                "speedup_vs_recompute": round(recompute_s / cached_s, 2),
                "recompute_gflops": round(flops / recompute_s / 1e9, 1),
                **hf_figures,
            }
        )
    )


if __name__ == "__main__":
    main()
