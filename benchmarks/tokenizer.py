"""Encode / decode throughput of the MAGVIT tokenizer at its default (paper) size.

    python benchmarks/tokenizer.py [--batch 1] [--repeats 2] [--device auto] [--dtype float32]

Clips are 17×128×128 (the paper's 128×128 format: latent (5, 16, 16), 1,280 tokens). The
network has random weights: throughput does not depend on them. Peak memory is the CUDA
allocator's peak on a GPU and the process's peak resident set (ru_maxrss) on a CPU. The last
line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn, device: torch.device, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up (allocator, kernels)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    began = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - began) / repeats, out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--tokenizer", default="magvit2", help="a registered visual tokenizer")
    args = parser.parse_args(argv)

    from videopoet.core.plugins import get_registry
    from videopoet.core.training import resolve_device

    device = resolve_device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    spec = get_registry().tokenizer_for("visual", args.tokenizer)
    model = spec.factory().to(device=device, dtype=dtype).eval()
    params = sum(p.numel() for p in model.parameters())
    h, w = args.size
    video = (torch.rand(args.batch, 3, args.frames, h, w, device=device) * 2 - 1).to(dtype)
    latent = model.latent_shape(args.frames, h, w)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    print(
        f"{spec.name}: {params / 1e6:.1f} M parameters, {args.batch}×{args.frames}×{h}×{w} "
        f"→ latent {latent} on {device} ({args.dtype}, {torch.get_num_threads()} threads)",
        file=sys.stderr,
    )
    with torch.inference_mode():
        enc_s, ids = _timed(lambda: model.encode(video), device, args.repeats)
        dec_s, out = _timed(lambda: model.decode(ids, latent), device, args.repeats)
    frames = args.batch * args.frames
    result = {
        "tokenizer": spec.name,
        "device": str(device),
        "dtype": args.dtype,
        "params_m": round(params / 1e6, 2),
        "clip": [args.batch, 3, args.frames, h, w],
        "latent_shape": list(latent),
        "tokens_per_clip": latent[0] * latent[1] * latent[2],
        "encode_s": round(enc_s, 4),
        "decode_s": round(dec_s, 4),
        "encode_fps": round(frames / enc_s, 2),
        "decode_fps": round(frames / dec_s, 2),
        "decode_over_encode_time": round(dec_s / enc_s, 2),
        "peak_mem_mb": round(_peak_mb(device), 1),
    }
    assert tuple(out.shape) == tuple(video.shape)
    print(f"encode {result['encode_fps']} frames/s, decode {result['decode_fps']} frames/s")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
