"""`videopoet generate` and `videopoet init`: argument parsing over :class:`Engine`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from videopoet.core.commit_fill import COMMIT_FILLS, DEFAULT_FILL
from videopoet.core.errors import ConfigError

if TYPE_CHECKING:
    from videopoet.core.bundle import BundleConfig

#: the committed tiny tokenizers `videopoet init --preset tiny` uses by default
CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
TINY_VISUAL = CHECKPOINTS / "magvit2_tiny_world"
TINY_AUDIO = CHECKPOINTS / "encodec16k_tiny_world"


def _inputs(args: argparse.Namespace) -> dict[str, object]:
    given: dict[str, object] = {
        "text": args.text,
        "image": args.image,
        "video": args.video,
        "audio": args.audio,
        "mask": args.mask,
    }
    for item in args.input or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError("input", item, "NAME=VALUE, e.g. direction=left")
        given[key.strip()] = value
    return {k: v for k, v in given.items() if v is not None}


def cmd_generate(args: argparse.Namespace) -> int:
    from videopoet.core.bundle import read_bundle_config
    from videopoet.core.plugins import get_registry

    inputs = _inputs(args)
    registry = get_registry()
    task = registry.task_behaviour(args.task)
    task.check_inputs(inputs)  # names first: no model is loaded for a wrong command line
    for name in ("image", "video", "audio"):
        value = inputs.get(name)
        if isinstance(value, str) and not Path(value).is_file():
            raise ConfigError(name, value, "an existing file")
    bundle = read_bundle_config(args.checkpoint)
    if args.extend and task.spec.target.visual != "video":
        raise ConfigError("extend", args.extend, f"0: task {task.name} makes no video")
    superres_options = _superres(args, bundle)

    from videopoet.core.engine import Engine
    from videopoet.data.media import tensor_to_frames, write_mp4

    engine = Engine.from_pretrained(args.checkpoint, device=args.device)
    out = Path(args.out)
    preview = None
    if args.preview:
        out.mkdir(parents=True, exist_ok=True)

        def preview(frames, done):  # noqa: ANN001, ANN202 - the Engine's PreviewFn
            path = write_mp4(out / "preview.mp4", tensor_to_frames(frames[0]))
            print(f"preview: {done} latent frames, {frames.shape[2]} frames -> {path}", flush=True)

    result = engine.generate(
        args.task,
        format=args.format,
        cfg_scale=args.cfg_scale,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        num_samples=args.num_samples,
        preview=preview,
        progress=not args.quiet,
        superres=args.superres,
        superres_options=superres_options,
        **inputs,
    )
    if args.extend:
        import torch

        longer = [
            engine.extend(
                video,
                args.extend,
                seed=args.seed,
                temperature=args.temperature,
                top_k=args.top_k,
                top_p=args.top_p,
            )
            for video in result.video
        ]
        result.video = torch.stack(longer)
        result.audio = None  # the sound is not extended: frame prediction makes video only
    written = result.save(out, args.task)
    record = {
        "task": result.task,
        "format": str(result.format),
        "files": [str(p) for p in written],
        "sampling": result.sampling,
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
    }
    print(json.dumps(record))
    return 0


def _superres(args: argparse.Namespace, bundle: BundleConfig) -> dict[str, object]:
    """``--superres`` checked against the bundle (before any model loads) and its options."""
    if args.superres is None:
        return {}
    if args.superres not in bundle.refiners:
        held = ", ".join(bundle.refiners) or "none"
        raise ConfigError(
            "superres", args.superres, f"a refiner the bundle holds ({held}); videopoet add-refiner"
        )
    if args.extend:
        raise ConfigError(
            "superres",
            args.superres,
            "no --extend beside it (a stage upscales clips of the bundle's format)",
        )
    options = {
        "steps": args.superres_steps,
        "text_scale": args.superres_text_scale,
        "lr_scale": args.superres_lr_scale,
    }
    return {k: v for k, v in options.items() if v is not None}


def cmd_init(args: argparse.Namespace) -> int:
    from videopoet.core.engine import Engine
    from videopoet.core.generation_config import apply_overrides

    generation = apply_overrides(None, args.generation)  # checked before any model is built

    visual = args.visual_tokenizer or (TINY_VISUAL if args.preset == "tiny" else None)
    audio = args.audio_tokenizer or (TINY_AUDIO if args.preset == "tiny" else None)
    for flag, path in (("visual_tokenizer", visual), ("audio_tokenizer", audio)):
        if path is None:
            raise ConfigError(flag, None, f"a trained tokenizer folder for preset {args.preset}")
        if not Path(path).is_dir():
            raise ConfigError(flag, str(path), "an existing tokenizer folder")
    engine = Engine.create(
        preset=args.preset,
        visual_dir=visual,
        audio_dir=audio,
        text_encoder=args.text_encoder,
        formats=args.formats,
        seed=args.seed,
        generation=generation,
        commit_fill=args.commit_fill,
    )
    path = engine.save_pretrained(args.dir, description=f"untrained {args.preset} bundle")
    print(
        json.dumps(
            {
                "bundle": str(path),
                "preset": args.preset,
                "parameters": engine.lm.num_parameters(),
                "vocab_size": engine.vocab.size,
                "max_seq_len": engine.lm.config.max_seq_len,
                "formats": [str(f) for f in engine.formats],
                "tasks": engine.tasks(),
                "generation": generation.model_dump(mode="json") if generation else None,
            }
        )
    )
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from videopoet.core.generation_config import add_sampling_arguments

    p = sub.add_parser("generate", help="generate media with a task from a bundle")
    p.add_argument("task", help="a registered task (videopoet tasks)")
    p.add_argument("--checkpoint", required=True, help="bundle folder (videopoet init DIR)")
    p.add_argument("--text", default=None, help="the prompt")
    p.add_argument("--image", default=None, help="image file (or a video: its first frame)")
    p.add_argument("--video", default=None, help="video file")
    p.add_argument("--audio", default=None, help="audio file (or a video with sound)")
    p.add_argument("--mask", default=None, help="mask image (white = hidden) or TOP,LEFT,H,W")
    p.add_argument(
        "--input",
        action="append",
        metavar="NAME=VALUE",
        help="another input the task lists (direction=left, amount=0.3, condition_frames=1)",
    )
    p.add_argument("--format", default=None, help="FRAMESxHEIGHTxWIDTH (default: the bundle's)")
    add_sampling_arguments(p)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--extend", type=int, default=0, help="extend the video N times (fp)")
    p.add_argument("--preview", action="store_true", help="write preview.mp4 as frames finish")
    p.add_argument(
        "--superres",
        nargs="?",
        const="superres",
        default=None,
        metavar="REFINER",
        help="upscale the video with the bundle's super-resolution refiner (default name superres)",
    )
    p.add_argument("--superres-steps", type=int, default=None, help="sampling steps (24)")
    p.add_argument("--superres-text-scale", type=float, default=None, help="text guidance")
    p.add_argument("--superres-lr-scale", type=float, default=None, help="low-res guidance")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="outputs", help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("init", help="write an untrained bundle around trained tokenizers")
    p.add_argument("dir", help="the bundle folder to write")
    p.add_argument("--preset", default="tiny", help="tiny (demo format 17x64x64) or small, ...")
    p.add_argument("--visual-tokenizer", default=None, help="default (tiny): the committed one")
    p.add_argument("--audio-tokenizer", default=None, help="default (tiny): the committed one")
    p.add_argument("--text-encoder", default="hash", help="registered text encoder name")
    p.add_argument("--formats", nargs="+", default=None, help="e.g. 17x64x64 1x64x64")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--commit-fill",
        choices=COMMIT_FILLS,
        default=DEFAULT_FILL,
        help="what hidden pixels of inpainting/outpainting conditions become before encoding "
        "(docs/tasks.md#inpaint-video-inpainting)",
    )
    add_generation_argument(p)
    p.set_defaults(func=cmd_init)


def add_generation_argument(p: argparse.ArgumentParser) -> None:
    """``--generation KEY=VALUE ...``: the bundle's sampling defaults."""
    p.add_argument(
        "--generation",
        nargs="+",
        action="extend",
        metavar="KEY=VALUE",
        help="a sampling default the bundle records (cfg_scale, temperature, top_k, top_p; "
        "TASK.KEY=VALUE for one task), e.g. cfg_scale=3 t2v.temperature=0.8",
    )
