"""Which sampling settings suit each task of a bundle? A grid over guidance, temperature and
top-k, scored by the analyser on a validation range of world seeds, never the reported one.

Each task's probe (videopoet/data/evaluation.py) generates from ``--seeds`` samples starting at
``--first`` (default 1000: held-out indices ``EVAL_OFFSET + 1000`` on, disjoint from the
``0..N`` that ``videopoet evaluate`` reports) with every setting of the grid, generation ``n``
with sampling seed ``n`` as in ``evaluate``. A task is scored by one number, higher is better:

    t2v       mean of colour, shape and direction accuracy
    fp        minus the position error (px)
    inpaint   PSNR inside the box (dB);  outpaint: inside the border
    stylize   minus the flow end-point error (px)
    a2v, v2a  pitch-height correlation
    i2v       first-frame PSNR (dB)

Guidance is swept only for the tasks with a condition to drop that the probe gives (t2v and
stylize drop the text, a2v the audio, v2a the video). The table lists every setting; the last
line is one JSON object: per task the bundle's current setting and score, the best setting
and its score. ``--write`` puts each best setting that beats the current one into the bundle's
``generation.tasks`` (bundle.json, written atomically); then report the bundle with
``videopoet evaluate`` on its usual range.

    python benchmarks/sampling_sweep.py checkpoints/videopoet_tiny_world --tasks t2v,a2v,v2a \
        --cfg 1,3,5,8 --temperature 0.7,1.0 --top-k 0,32 --seeds 32 --threads 1
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from videopoet.core.bundle import read_bundle_config, write_bundle_config
from videopoet.core.engine import Engine
from videopoet.core.generation_config import GenerationDefaults, TaskSampling
from videopoet.data import evaluation

#: task -> (score from the probe's summary, what it is)
SCORES = {
    "t2v": (
        lambda f: (f["t2v_color_acc"] + f["t2v_shape_acc"] + f["t2v_direction_acc"]) / 3,
        "mean of colour, shape, direction accuracy",
    ),
    "fp": (lambda f: -f["fp_position_error"], "- position error (px)"),
    "inpaint": (lambda f: f["inpaint_psnr"], "PSNR in the box (dB)"),
    "outpaint": (lambda f: f["outpaint_psnr"], "PSNR in the border (dB)"),
    "stylize": (lambda f: -f["stylize_flow_epe"], "- flow EPE (px)"),
    "a2v": (lambda f: f["a2v_corr"], "pitch-height correlation"),
    "v2a": (lambda f: f["v2a_corr"], "pitch-height correlation"),
    "i2v": (lambda f: f["i2v_first_frame_psnr"], "first-frame PSNR (dB)"),
    "t2i": (
        lambda f: (f["t2i_color_acc"] + f["t2i_shape_acc"]) / 2,
        "mean of colour, shape accuracy",
    ),
    "avcont": (lambda f: f["avcont_corr"], "own pitch-height correlation"),
    "uncond": (lambda f: -f["uncond_fd"], "- Fréchet distance to real clips"),
    "uncond_image": (lambda f: -f["uncond_image_fd"], "- Fréchet distance to real images"),
}


def numbers(text: str, kind: type) -> list[Any]:
    return [kind(v) for v in text.split(",") if v.strip()]


def score(task: str, figures: dict[str, Any]) -> float:
    try:
        value = SCORES[task][0](figures)
    except TypeError:  # a figure is None: nothing measured
        return -math.inf
    return float(value) if value is not None and math.isfinite(value) else -math.inf


def run(engine: Engine, task: str, plan: list, fmt: Any, setting: dict[str, Any]) -> float:
    probe = evaluation.PROBES[task]
    used: dict[str, Any] = {}
    rows = evaluation.run_probe(engine, probe, plan, fmt, setting, used, None)
    return score(task, probe.summarize(rows))


def grid(engine: Engine, task: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    guides = bool(engine.registry.task(task).cfg_drop)
    scales = args.cfg if guides else [1.0]
    out = []
    for cfg, temperature, top_k in itertools.product(scales, args.temperature, args.top_k):
        setting = {"temperature": temperature, "top_k": top_k}
        if guides:
            setting["cfg_scale"] = cfg
        out.append(setting)
    return out


def shown(setting: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in setting.items() if v is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("--tasks", default="t2v,a2v,v2a")
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--first", type=int, default=1000)
    parser.add_argument("--cfg", default="1,3,5,8", help="guidance scales (comma-separated)")
    parser.add_argument("--temperature", default="0.7,1.0")
    parser.add_argument("--top-k", default="0,32", help="0 = off")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="store the best in bundle.json")
    args = parser.parse_args()
    args.cfg = numbers(args.cfg, float)
    args.temperature = numbers(args.temperature, float)
    args.top_k = numbers(args.top_k, int)
    if args.first < 16:
        parser.error("--first must leave the reported range (0..15 and more) alone: use >= 16")
    torch.set_num_threads(args.threads)

    engine = Engine.from_pretrained(args.bundle)
    fmt = evaluation.video_format(engine)
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = [t for t in tasks if t not in SCORES]
    if unknown:
        parser.error(f"--tasks: unknown {unknown}; choose among {', '.join(SCORES)}")
    image_fmt = evaluation.image_format(engine, fmt)
    formats = {t: image_fmt if evaluation.PROBES[t].image else fmt for t in tasks}
    if None in formats.values():
        parser.error("--tasks: an image task, and the bundle serves no image format")
    caches: dict = {f: {} for f in formats.values()}
    plans = {
        t: evaluation.held_out(
            evaluation.PROBES[t], args.seeds, formats[t], None, caches[formats[t]], args.first
        )
        for t in tasks
    }
    results: dict[str, Any] = {}
    print(f"{args.bundle}: {args.seeds} validation samples from index {args.first}")
    print(f"{'task':8s} {'setting':42s} {'score':>8s}  seconds")
    for task in tasks:
        current = engine.sampling_for(task)
        others = [s for s in grid(engine, task, args) if engine.sampling_for(task, **s) != current]
        settings = [dict(current)] + others
        tried: list[tuple[dict[str, Any], float]] = []
        for setting in tqdm(settings, desc=task, leave=False):
            began = time.perf_counter()
            value = run(engine, task, plans[task], formats[task], setting)
            tried.append((setting, value))
            label = shown(setting) + ("  (bundle)" if len(tried) == 1 else "")
            seconds = time.perf_counter() - began
            tqdm.write(f"{task:8s} {label:42s} {value:8.3f}  {seconds:.0f}")
        best, best_value = max(tried, key=lambda pair: pair[1])
        results[task] = {
            "score": SCORES[task][1],
            "current": tried[0][0],
            "current_score": tried[0][1],
            "best": best,
            "best_score": best_value,
            "samples": len(plans[task]),
        }
    if args.write:
        write_best(args.bundle, results)
    print(json.dumps({"bundle": args.bundle, "first": args.first, "tasks": results}))


def write_best(bundle: str, results: dict[str, Any]) -> None:
    config = read_bundle_config(bundle)  # the file is rewritten whole, atomically
    generation = config.generation or GenerationDefaults()
    tasks = dict(generation.tasks)
    for task, result in results.items():
        if result["best_score"] > result["current_score"]:
            best = {**result["best"], "top_k": result["best"].get("top_k") or None}  # 0: off
            tasks[task] = TaskSampling(**best)
            print(f"{task}: bundle.json now samples with {shown(best)}")
    config.generation = generation.model_copy(update={"tasks": tasks})
    write_bundle_config(Path(bundle), config)


if __name__ == "__main__":
    main()
