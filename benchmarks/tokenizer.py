"""Encode / decode throughput of the MAGVIT tokenizer at its default (paper) size.

    python benchmarks/tokenizer.py [--batch 1] [--repeats 2] [--device auto] [--dtype float32]

Clips are 17×128×128 (the paper's 128×128 format: latent (5, 16, 16), 1,280 tokens). The
network has random weights: throughput does not depend on them.

Peak memory is that of the work itself, encode and decode apart (warm-up call included): on a
GPU the CUDA allocator's peak above what was allocated before the phase; on a CPU the growth of
the resident set above its level just before the phase (taken after glibc's ``malloc_trim``
has returned freed heap pages, so that reusing them is counted), sampled every millisecond from
``/proc/self/statm`` by a thread (torch's allocations are invisible to ``tracemalloc``, and the
process's lifetime maximum ``ru_maxrss`` also counts imports and the weights, so it is printed
beside, not used). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import sys
import threading
import time

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _release_free_heap() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``), so that memory freed
    before a phase and still resident cannot be reused unseen by it."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the entry level is a little higher
        pass


def _rss_bytes() -> int:
    """Resident set size now: the second field of /proc/self/statm, in pages."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * _PAGE


class PeakGrowth:
    """Peak memory above the level at entry, for the work inside ``with``.

    CUDA: the allocator's peak minus what was allocated at entry. CPU: a thread samples the
    resident set every ``interval`` seconds (plus once at exit); the peak minus the entry
    level is the work's own peak, whatever allocated it (torch, numpy, the interpreter).
    """

    def __init__(self, device: torch.device, interval: float = 0.001) -> None:
        self.device, self.interval = device, interval
        self.peak_bytes = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakGrowth:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            _release_free_heap()
            self._base = self._peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, _rss_bytes())
        self.peak_bytes = peak - self._base

    @property
    def mb(self) -> float:
        return self.peak_bytes / 2**20


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
    print(
        f"{spec.name}: {params / 1e6:.1f} M parameters, {args.batch}×{args.frames}×{h}×{w} "
        f"→ latent {latent} on {device} ({args.dtype}, {torch.get_num_threads()} threads)",
        file=sys.stderr,
    )
    with torch.inference_mode():
        with PeakGrowth(device) as enc_mem:
            enc_s, ids = _timed(lambda: model.encode(video), device, args.repeats)
        with PeakGrowth(device) as dec_mem:
            dec_s, out = _timed(lambda: model.decode(ids, latent), device, args.repeats)
    frames = args.batch * args.frames
    result = {
        "tokenizer": spec.name,
        "load_average_1m": round(os.getloadavg()[0], 2),
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
        "encode_peak_mem_mb": round(enc_mem.mb, 1),
        "decode_peak_mem_mb": round(dec_mem.mb, 1),
        "peak_mem_mb": round(max(enc_mem.mb, dec_mem.mb), 1),
        "peak_mem_measure": "cuda allocator peak" if device.type == "cuda" else "RSS growth",
        # context only: imports, weights and everything else the process ever held
        "process_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    assert tuple(out.shape) == tuple(video.shape)
    print(
        f"encode {result['encode_fps']} frames/s, decode {result['decode_fps']} frames/s; "
        f"peak memory of the work: encode {result['encode_peak_mem_mb']} MB, decode "
        f"{result['decode_peak_mem_mb']} MB (process lifetime max RSS "
        f"{result['process_max_rss_mb']} MB)"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
