"""Fréchet distance between feature sets (FVD-style), and the feature extractors it reads.

Two sets of clips are compared through features: each set is summarised by the mean and the
covariance of its clips' feature vectors, and the distance between the two Gaussians is

    d² = |μa - μb|² + tr Σa + tr Σb - 2 tr (Σa^½ Σb Σa^½)^½

(Fréchet / 2-Wasserstein distance of Gaussians; FID and FVD report d²). The matrix square roots
are taken by eigen-decomposition of symmetric positive semi-definite matrices, in float64, with
round-off negatives clipped to zero: no complex ``sqrtm`` and no imaginary parts to discard.

Features come from a registered **extractor** (:func:`get_extractor`):

- ``analyser`` (built in, no weights): per clip, what :mod:`videopoet.data.analyser` measures
  of it (object colour and shape histograms, background colour, position, size, trajectory);
- ``network``: a video network loaded from a local folder (``config.json`` naming one of
  :data:`ARCHITECTURES` + ``model.safetensors``; nothing is downloaded and nothing unpickled).

:func:`frechet_figures` measures a bundle's text-to-video clips against the world's real
held-out clips with one extractor (``videopoet evaluate --fvd``).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from videopoet.core.errors import ConfigError

# ---------------------------------------------------------------------------- the distance


@dataclass(frozen=True)
class FeatureStats:
    """Mean (D,) and covariance (D, D) of ``count`` feature vectors, in float64."""

    mean: np.ndarray
    cov: np.ndarray
    count: int

    @classmethod
    def of(cls, features: np.ndarray | torch.Tensor, name: str = "features") -> FeatureStats:
        """Statistics of an (N, D) feature matrix, N >= 2 (unbiased covariance)."""
        if torch.is_tensor(features):
            features = features.detach().cpu().numpy()
        array = np.asarray(features, dtype=np.float64)
        if array.ndim != 2 or array.shape[0] < 2 or array.shape[1] < 1:
            raise ConfigError(name, tuple(array.shape), "an (N, D) matrix with N >= 2 vectors")
        if not np.isfinite(array).all():
            raise ConfigError(name, "non-finite values", "finite features")
        return cls(array.mean(0), np.atleast_2d(np.cov(array, rowvar=False)), array.shape[0])


def _symmetric(matrix: np.ndarray) -> np.ndarray:
    return (matrix + matrix.T) / 2


def sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (negative
    eigenvalues, round-off of a singular matrix, are taken as zero)."""
    values, vectors = np.linalg.eigh(_symmetric(np.asarray(matrix, np.float64)))
    return _symmetric((vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T)


def gaussian_frechet(
    mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray
) -> float:
    """Squared Fréchet distance of N(mean_a, cov_a) and N(mean_b, cov_b) (>= 0)."""
    mean_a, mean_b = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mean_a, mean_b))
    cov_a, cov_b = (np.atleast_2d(np.asarray(c, np.float64)) for c in (cov_a, cov_b))
    dim = mean_a.shape[0]
    for name, value, shape in (
        ("mean_b", mean_b, (dim,)),
        ("cov_a", cov_a, (dim, dim)),
        ("cov_b", cov_b, (dim, dim)),
    ):
        if value.shape != shape:
            raise ConfigError(name, tuple(value.shape), f"shape {shape} (mean_a has {dim} dims)")
    root_a = sqrt_psd(cov_a)
    middle = _symmetric(root_a @ _symmetric(cov_b) @ root_a)  # PSD, similar to cov_a @ cov_b
    cross = float(np.sqrt(np.clip(np.linalg.eigvalsh(middle), 0, None)).sum())
    diff = mean_a - mean_b
    value = float(diff @ diff) + float(np.trace(cov_a) + np.trace(cov_b)) - 2 * cross
    return max(value, 0.0)


def frechet_distance(
    a: np.ndarray | torch.Tensor | FeatureStats, b: np.ndarray | torch.Tensor | FeatureStats
) -> float:
    """Squared Fréchet distance between two feature sets ((N, D) matrices or their stats)."""
    sa = a if isinstance(a, FeatureStats) else FeatureStats.of(a, "features_a")
    sb = b if isinstance(b, FeatureStats) else FeatureStats.of(b, "features_b")
    if sa.mean.shape != sb.mean.shape:
        raise ConfigError("features_b", sb.mean.shape[0], f"{sa.mean.shape[0]} dims (as a)")
    return gaussian_frechet(sa.mean, sa.cov, sb.mean, sb.cov)


# ---------------------------------------------------------------------------- extractors


class FeatureExtractor:
    """Clips (N, 3, T, H, W) in [-1, 1] (or a list of (3, T, H, W)) → features (N, dim)."""

    name: str = ""
    dim: int = 0

    def __call__(self, clips: torch.Tensor | Sequence[torch.Tensor]) -> np.ndarray:
        raise NotImplementedError


#: registered extractors by name: a factory taking the extractor's options
EXTRACTORS: dict[str, Callable[..., FeatureExtractor]] = {}


def register_extractor(name: str, factory: Callable[..., FeatureExtractor]) -> None:
    """Add an extractor under ``name``; a name already taken is an error."""
    if name in EXTRACTORS:
        raise ConfigError("extractor", name, "a name not registered yet")
    EXTRACTORS[name] = factory


def get_extractor(name: str, **options: Any) -> FeatureExtractor:
    """The extractor ``name`` built with ``options`` (``network`` takes ``path``)."""
    if name not in EXTRACTORS:
        close = difflib.get_close_matches(name, list(EXTRACTORS), n=2)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError("extractor", name, f"one of {', '.join(EXTRACTORS)}{hint}")
    return EXTRACTORS[name](**options)


def _clip_list(clips: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    out = list(clips) if not torch.is_tensor(clips) or clips.dim() == 5 else [clips]
    for clip in out:
        if clip.dim() != 4 or clip.shape[0] != 3:
            raise ConfigError("clips", tuple(clip.shape), "clips of shape (3, T, H, W)")
    return out


class AnalyserFeatures(FeatureExtractor):
    """What the world's analyser measures of a clip, as a vector (no weights, any size).

    Colour and shape are per-frame histograms (fractions of frames), positions and sizes are
    in units of ``min(H, W)``, the trajectory is the analyser's motion features (clipped to
    +-2); a clip with no object gets zeros there (its ``found`` fraction says so). Three pixel
    statistics tell the world's flat shapes from texture and flicker: the mean spatial and
    temporal absolute differences, and the fraction of pixels near the fitted background.
    """

    name = "analyser"
    KEYS = ("dx", "dy", "growth", "rx", "ry")

    def __init__(self) -> None:
        from videopoet.data import analyser

        self.colors = analyser.PALETTE_NAMES
        self.shapes = ("square", "circle", "triangle")
        self.dim = len(self.colors) + len(self.shapes) + 3 + 2 + 2 + 1 + 2 + len(self.KEYS) + 3

    def features(self, clip: torch.Tensor) -> np.ndarray:
        from videopoet.data import analyser

        seen = analyser.analyse_video(clip)
        here = seen.present
        frames = max(seen.frames, 1)
        colors = [sum(c == name for c in seen.colors) / frames for name in self.colors]
        shapes = [sum(s == name for s in seen.shapes) / frames for name in self.shapes]

        def mean(values: np.ndarray) -> float:  # over the frames where the object is
            kept = values[here & np.isfinite(values)]
            return float(np.mean(kept)) if kept.size else 0.0

        unit = seen.unit
        centre = [mean(seen.centers[:, 0]) / unit, mean(seen.centers[:, 1]) / unit]
        motion = [float(np.clip(seen.trajectory.get(k, 0.0), -2, 2)) for k in self.KEYS]
        rgb = (clip.detach().float().cpu().clamp(-1, 1) + 1) / 2  # (3, T, H, W) in [0, 1]
        spatial = (rgb[..., 1:, :] - rgb[..., :-1, :]).abs().mean() + (
            rgb[..., 1:] - rgb[..., :-1]
        ).abs().mean()
        temporal = (rgb[:, 1:] - rgb[:, :-1]).abs().mean() if rgb.shape[1] > 1 else 0.0
        background = torch.as_tensor(seen.background_rgb, dtype=torch.float32)[:, None, None, None]
        near = ((rgb - background).norm(dim=0) < 0.1).float().mean()
        vector = [
            *colors,
            *shapes,
            *(float(v) for v in seen.background_rgb),
            float(here.mean()),
            mean(seen.confidence),
            *centre,
            mean(seen.sizes) / unit,
            mean(seen.fill),
            mean(seen.skew),
            *motion,
            float(spatial) / 2,
            float(temporal),
            float(near),
        ]
        return np.nan_to_num(np.asarray(vector, np.float64), nan=0.0, posinf=0.0, neginf=0.0)

    def __call__(self, clips: torch.Tensor | Sequence[torch.Tensor]) -> np.ndarray:
        rows = [self.features(clip) for clip in _clip_list(clips)]
        return np.stack(rows) if rows else np.zeros((0, self.dim))


# ---------------------------------------------------------------------------- networks


class Conv3dConfig(BaseModel):
    """A small 3-D convolutional encoder: strided conv blocks, then global average pooling."""

    model_config = ConfigDict(extra="forbid")

    widths: list[int] = Field(default=[16, 32, 64], min_length=1)
    kernel: int = Field(default=3, ge=1, le=7)


class Conv3dEncoder(torch.nn.Module):
    def __init__(self, config: Conv3dConfig) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        channels = 3
        for width in config.widths:
            layers += [
                torch.nn.Conv3d(channels, width, config.kernel, 2, config.kernel // 2),
                torch.nn.GELU(),
            ]
            channels = width
        self.body = torch.nn.Sequential(*layers)
        self.dim = channels

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.body(video).mean((2, 3, 4))


#: network architectures a feature network's config may name: (config model, module class)
ARCHITECTURES: dict[str, tuple[type[BaseModel], Callable[[Any], torch.nn.Module]]] = {
    "conv3d": (Conv3dConfig, Conv3dEncoder),
}


class NetworkConfig(BaseModel):
    """``config.json`` of a feature network folder."""

    model_config = ConfigDict(extra="forbid")

    kind: str = "feature_network"
    architecture: str
    options: dict[str, Any] = Field(default_factory=dict)
    frames: int = Field(default=16, ge=1, description="clips are resampled to this size")
    height: int = Field(default=64, ge=8)
    width: int = Field(default=64, ge=8)
    description: str = ""


def _network_module(config: NetworkConfig, where: str) -> torch.nn.Module:
    if config.architecture not in ARCHITECTURES:
        raise ConfigError(
            f"{where}: architecture", config.architecture, f"one of {', '.join(ARCHITECTURES)}"
        )
    schema, build = ARCHITECTURES[config.architecture]
    try:
        options = schema.model_validate(config.options)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}: options.{field}", first.get("input"), first["msg"]) from None
    return build(options)


def save_feature_network(
    directory: str | Path, module: torch.nn.Module, config: NetworkConfig | dict[str, Any]
) -> Path:
    """Write a feature network folder (``model.safetensors`` + ``config.json``)."""
    from videopoet.core.serialization import save_pretrained

    config = config if isinstance(config, NetworkConfig) else NetworkConfig.model_validate(config)
    return save_pretrained(directory, module, config.model_dump(mode="json"))


class NetworkFeatures(FeatureExtractor):
    """Features of a network from a local folder: clips are resampled (trilinear) to its
    configured frames x height x width, then its output (N, dim) is the feature vector."""

    name = "network"

    def __init__(self, path: str | Path | None = None, device: str = "cpu") -> None:
        from videopoet.core.serialization import load_pretrained, load_weights

        if path is None:
            raise ConfigError("path", None, "the folder of a feature network (config.json)")
        state, raw = load_pretrained(path, device)
        where = str(Path(path) / "config.json")
        try:
            self.config = NetworkConfig.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"{where}: {field}", first.get("input"), first["msg"]) from None
        self.module = _network_module(self.config, where)
        load_weights(self.module, state, Path(path) / "model.safetensors", "its architecture")
        self.module = self.module.to(device).eval()
        self.device = device
        self.path = str(path)
        with torch.no_grad():
            probe = torch.zeros(1, 3, self.config.frames, self.config.height, self.config.width)
            self.dim = int(self.module(probe.to(device)).shape[-1])

    @torch.no_grad()
    def __call__(self, clips: torch.Tensor | Sequence[torch.Tensor]) -> np.ndarray:
        size = (self.config.frames, self.config.height, self.config.width)
        rows = []
        for clip in _clip_list(clips):
            video = clip.float()[None].to(self.device)
            if tuple(video.shape[2:]) != size:
                video = torch.nn.functional.interpolate(
                    video, size=size, mode="trilinear", align_corners=False
                )
            rows.append(self.module(video).reshape(-1).double().cpu().numpy())
        return np.stack(rows) if rows else np.zeros((0, self.dim))


register_extractor("analyser", AnalyserFeatures)
register_extractor("network", NetworkFeatures)


def extractor_from_argument(value: str) -> FeatureExtractor:
    """A registered extractor's name, or the folder of a feature network."""
    if value in EXTRACTORS:
        if value == "network":
            raise ConfigError("fvd", value, "the folder of a feature network, not the word")
        return get_extractor(value)
    if Path(value).is_dir():
        return get_extractor("network", path=value)
    raise ConfigError("fvd", value, f"an extractor ({', '.join(EXTRACTORS)}) or a network folder")


# ---------------------------------------------------------------------------- a bundle's FVD


def frechet_figures(
    engine: Any,
    extractor: FeatureExtractor,
    *,
    clips: int = 16,
    untrained: Any = None,
    format: str | None = None,
    sampling: dict[str, Any] | None = None,
    world_config: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Text-to-video Fréchet distances on the world's held-out split.

    The reference set is the real held-out clips ``0 .. clips-1``; the bundle (and
    ``untrained``, when given) generates one clip from each of their captions (sampling seed
    = the clip's number). ``real_vs_real`` is the distance between those real clips and the
    next ``clips`` real ones: the floor a perfect model would reach with this many clips.
    ``sampling``: ``generate``'s keywords over the bundle's defaults for t2v; both models
    sample with the result (``sampling`` in the returned figures).
    """
    from tqdm.auto import tqdm

    from videopoet.data import evaluation

    if clips < 2:
        raise ConfigError("fvd_clips", clips, "at least 2 clips (a covariance needs two)")
    fmt = evaluation.video_format(engine, format)
    cache: dict[int, Any] = {}
    items = [
        it for _, it in evaluation.held_out(evaluation.Probe(), 2 * clips, fmt, world_config, cache)
    ]
    real, spare = items[:clips], items[clips:]
    models = [("bundle", engine)] + ([("untrained", untrained)] if untrained is not None else [])
    total = len(models) * clips + 2 * clips
    out: dict[str, Any] = {"extractor": extractor.name, "clips": clips, "format": str(fmt)}
    out["sampling"] = sampling = engine.sampling_for("t2v", **(sampling or {}))  # both models
    with tqdm(total=total, desc="fvd", unit="clip", disable=not progress) as bar:
        reference = FeatureStats.of(extractor([it.video for it in real]))
        floor = FeatureStats.of(extractor([it.video for it in spare]))
        bar.update(2 * clips)
        out["real_vs_real"] = frechet_distance(reference, floor)
        for name, model in models:
            generated = []
            for n, item in enumerate(real):
                result = model.generate(
                    "t2v", format=fmt, seed=n, text=item.caption, **(sampling or {})
                )
                generated.append(result.video[0])
                bar.update(1)
            out[name] = frechet_distance(reference, FeatureStats.of(extractor(generated)))
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in out.items()}
