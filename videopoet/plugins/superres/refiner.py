"""The ``superres`` refiner: a cascade of trained stages, as the Engine holds and runs it.

:class:`SuperResolution` is what a bundle's ``refiners/superres/`` folder loads into
(``config.json`` listing the stages + one ``model.safetensors``): one stage, or two 2x stages
as in the paper. ``engine.refine("superres", video, text=..., seed=...)`` calls
:meth:`SuperResolution.refine`: each stage encodes its input video with the bundle's visual
tokenizer, samples high-resolution tokens, and decodes them; the next stage takes that video.

A stage records the visual tokenizer it was trained on (registered name and a fingerprint of
its weights) and its text encoder; running it with another tokenizer is an error, never
silently wrong tokens.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from videopoet.core.errors import ConfigError
from videopoet.core.serialization import save_pretrained
from videopoet.plugins.superres.config import StageConfig
from videopoet.plugins.superres.model import SuperResTransformer
from videopoet.plugins.superres.sampling import sample_tokens

NAME = "superres"
#: the sampling options ``refine`` takes (each defaults to the stage's config)
OPTIONS = ("steps", "text_scale", "lr_scale", "temperature", "choice_temperature")


def resize(video: torch.Tensor, factor: float) -> torch.Tensor:
    """Bicubic resize of every frame of ``(B, 3, T, H, W)`` by ``factor``, clamped to
    ``[-1, 1]``; antialiased when shrinking (how the low-resolution training inputs are made)."""
    b, c, t, h, w = video.shape
    frames = video.transpose(1, 2).reshape(b * t, c, h, w).float()
    size = (round(h * factor), round(w * factor))
    out = F.interpolate(
        frames, size=size, mode="bicubic", align_corners=False, antialias=factor < 1
    )
    return out.clamp(-1, 1).reshape(b, t, c, *size).transpose(1, 2)


def tokenizer_fingerprint(network: nn.Module) -> str:
    """SHA-1 of a tokenizer's weights (names, shapes and bytes, in name order): which exact
    tokenizer a stage's tokens come from."""
    digest = hashlib.sha1()
    for name, tensor in sorted(network.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class SuperResolution(nn.Module):
    """A cascade of super-resolution stages (each a :class:`SuperResTransformer`)."""

    def __init__(self, stages: list[dict[str, Any]] | None = None) -> None:
        super().__init__()
        if not stages:
            raise ConfigError("stages", stages, "at least one stage config")
        self.configs = [s if isinstance(s, StageConfig) else StageConfig(**s) for s in stages]
        self.stages = nn.ModuleList(SuperResTransformer(c) for c in self.configs)
        self._checked: dict[int, str] = {}
        self._text_encoders: dict[str, Any] = {}

    @property
    def scale(self) -> int:
        """Spatial upscaling of the whole cascade."""
        out = 1
        for config in self.configs:
            out *= config.scale
        return out

    @property
    def device(self) -> torch.device:
        return self.stages[0].device

    def config_dict(self) -> dict[str, Any]:
        return {"name": NAME, "stages": [c.record() for c in self.configs]}

    def save_pretrained(self, directory: str | Path) -> Path:
        return save_pretrained(directory, self, self.config_dict())

    @classmethod
    def cascade(cls, parts: list[SuperResolution]) -> SuperResolution:
        """One cascade of the stages of ``parts``, in order, weights included."""
        joined = cls([c for part in parts for c in part.configs])
        for target, source in zip(joined.stages, [s for p in parts for s in p.stages], strict=True):
            target.load_state_dict(source.state_dict())
        return joined.to(parts[0].device).eval()

    # ------------------------------------------------------------------ running

    def check_tokenizer(self, network: nn.Module, spec: Any, stage: int = 0) -> None:
        """The bundle's visual tokenizer is the one stage ``stage`` was trained on."""
        config = self.configs[stage]
        if config.codebook_bits != spec.codebook_bits:
            raise ConfigError(
                "visual_tokenizer",
                spec.name,
                f"a {config.codebook_bits}-bit tokenizer "
                f"(super-resolution stage {stage} was trained on one)",
            )
        if config.tokenizer is not None and config.tokenizer != spec.name:
            raise ConfigError(
                "visual_tokenizer",
                spec.name,
                f"{config.tokenizer} (super-resolution stage {stage} was trained on its tokens)",
            )
        if config.tokenizer_identity is None:
            return
        key = id(network)
        if key not in self._checked:
            self._checked[key] = tokenizer_fingerprint(network)
        if self._checked[key] != config.tokenizer_identity:
            raise ConfigError(
                "visual_tokenizer",
                f"weights {self._checked[key][:12]}",
                f"the tokenizer super-resolution stage {stage} was trained on (weights "
                f"{config.tokenizer_identity[:12]})",
            )

    def text_encoder(self, stage: int, registry: Any) -> Any:
        """The text encoder a stage was trained with (built once from its record)."""
        record = self.configs[stage].text_encoder
        if record is None:
            return None
        if record.identity not in self._text_encoders:
            from videopoet.core.engine import build_text_encoder

            self._text_encoders[record.identity] = build_text_encoder(record, registry)
        return self._text_encoders[record.identity]

    def refine(
        self,
        engine: Any,
        video: torch.Tensor,
        *,
        text: str | None = None,
        seed: int | None = None,
        stages: int | None = None,
        steps: int | None = None,
        text_scale: float | None = None,
        lr_scale: float | None = None,
        temperature: float | None = None,
        choice_temperature: float | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """``video`` (B, 3, T, H, W) in [-1, 1] → (B, 3, T, H·s, W·s) through every stage (or
        the first ``stages``). ``text`` conditions each stage (through the text encoder it was
        trained with); ``seed`` makes the sampling repeatable; ``steps``, ``text_scale``,
        ``lr_scale``, ``temperature`` and ``choice_temperature`` override the stages' own
        sampling defaults (:mod:`~videopoet.plugins.superres.sampling`)."""
        if engine.visual is None:
            raise ConfigError("refiner", NAME, "a bundle with a visual tokenizer")
        return self.run(
            engine.visual,
            engine.visual_spec,
            video,
            text=text,
            seed=seed,
            stages=stages,
            registry=engine.registry,
            progress=progress,
            steps=steps,
            text_scale=text_scale,
            lr_scale=lr_scale,
            temperature=temperature,
            choice_temperature=choice_temperature,
        )

    @torch.no_grad()
    def run(
        self,
        tokenizer: nn.Module,
        spec: Any,
        video: torch.Tensor,
        *,
        text: str | None = None,
        seed: int | None = None,
        stages: int | None = None,
        registry: Any = None,
        progress: bool = False,
        **options: Any,
    ) -> torch.Tensor:
        """:meth:`refine` with the tokenizer given directly (the trainer's evaluation)."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigError("options", unknown, f"sampling options among {', '.join(OPTIONS)}")
        if video.dim() != 5 or video.shape[1] != 3:
            raise ConfigError("video", tuple(video.shape), "a (B, 3, T, H, W) clip in [-1, 1]")
        count = len(self.stages) if stages is None else stages
        if not 1 <= count <= len(self.stages):
            raise ConfigError("stages", stages, f"1 to the {len(self.stages)} stages held")
        if registry is None:
            from videopoet.core.plugins import get_registry

            registry = get_registry()
        device = next(tokenizer.parameters()).device
        for index in range(count):
            self.check_tokenizer(tokenizer, spec, index)
            stage, config = self.stages[index], self.configs[index]
            _, _, frames, height, width = video.shape
            lr_grid = spec.latent_shape(frames, height, width)
            grid = (lr_grid[0], lr_grid[1] * config.scale, lr_grid[2] * config.scale)
            stage.check_grid(grid)
            lr_ids = tokenizer.encode(video.to(device)).to(stage.device)
            embeddings = mask = None
            encoder = self.text_encoder(index, registry)
            if text is not None and encoder is not None:
                encoded = encoder.encode([text])
                embeddings = encoded.embeddings.expand(video.shape[0], -1, -1)
                mask = encoded.mask.expand(video.shape[0], -1)
            settings = {k: options.get(k) for k in OPTIONS}
            settings = {k: getattr(config, k) if v is None else v for k, v in settings.items()}
            ids = sample_tokens(
                stage,
                lr_ids,
                embeddings,
                mask,
                grid=grid,
                seed=None if seed is None else seed + index,
                progress=progress,
                **settings,
            )
            video = tokenizer.decode(ids.to(device), grid).float().clamp(-1, 1).cpu()
        return video


def build(**config: Any) -> SuperResolution:
    """The registered factory: a cascade from a saved ``config.json`` (less its ``name``)."""
    return SuperResolution(**config)


def add_to_bundle(
    bundle: str | Path, stages: list[str | Path], out: str | Path, description: str = ""
) -> dict[str, Any]:
    """What ``videopoet add-refiner`` does: the trained stage folders, as one cascade, into a
    copy of ``bundle`` at ``out`` (may be ``bundle`` itself), each checked against the bundle's
    visual tokenizer; returns what was written."""
    from videopoet.core.bundle import read_bundle_config
    from videopoet.core.engine import Engine, load_refiner

    read_bundle_config(bundle)
    for folder in stages:
        if not Path(folder).is_dir():
            raise ConfigError("stages", str(folder), "a trained refiner folder (RUN/refiner)")
    engine = Engine.from_pretrained(bundle)
    if engine.visual is None:
        raise ConfigError("bundle", str(bundle), "a bundle with a visual tokenizer")
    cascade = SuperResolution.cascade([load_refiner(f, NAME, engine.registry) for f in stages])
    for index in range(len(cascade.stages)):
        cascade.check_tokenizer(engine.visual, engine.visual_spec, index)
    engine.refiners[NAME] = cascade
    path = engine.save_pretrained(out, description=description)
    return {
        "bundle": str(path),
        "refiner": NAME,
        "stages": len(cascade.stages),
        "scale": cascade.scale,
        "parameters": sum(p.numel() for p in cascade.parameters()),
    }
