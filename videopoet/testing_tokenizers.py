"""The contract every registered tokenizer must pass, importable by third-party plugin packages.

In a plugin's own test suite::

    from videopoet.testing_tokenizers import TokenizerContractTests

    class TestMyTokenizer(TokenizerContractTests):
        tokenizer_name = "my_tok"
        factory_kwargs = {"channels": 8}  # a tiny network: the checks run in seconds on a CPU

Or call :func:`check_tokenizer` (or :func:`check_visual_tokenizer` /
:func:`check_audio_tokenizer`) directly, with the declaration and optionally a network already
built or loaded. Each check raises ``AssertionError`` with a message that names the tokenizer,
the input and what is wrong.

The network protocol checked here is what the engine calls and what the built-in tokenizers
(``videopoet/plugins/magvit``, ``videopoet/plugins/encodec_audio``) provide:

visual (:class:`VisualTokenizerSpec`)
    ``encode(video)``: float ``(B, channels, T, H, W)`` in ``[-1, 1]`` → integer ids
    ``(B, t*h*w)`` in ``[0, 2^codebook_bits)``, with ``(t, h, w) = spec.latent_shape(T, H, W)``;
    ``decode(ids, (t, h, w))`` → the video ``(B, channels, T, H, W)`` in ``[-1, 1]``; optionally
    ``latent_shape(T, H, W)``, which must agree with the declaration. Causal: latent frame 0 is
    frame 0 alone, latent frame ``j`` covers frames ``(j-1)·f + 1 .. j·f`` (``f`` the temporal
    factor) and depends on no later frame.
audio (:class:`AudioTokenizerSpec`)
    ``encode(wav)``: float ``(B, 1, samples)`` in ``[-1, 1]`` → integer ids
    ``(B, levels * frames)``, level-major (every frame of level 0, then level 1, ...), each in
    ``[0, codebook_size)``, with ``frames = spec.latent_frames(samples / sample_rate)`` (a
    partial last frame is dropped); ``decode(ids)`` → ``(B, 1, frames * hop_length)`` in
    ``[-1, 1]``.

Either: a geometry the declaration refuses (a frame count that is not ``1 + f·k``, a size that is
not a multiple of the spatial factor, less than one latent frame of audio, ids of the wrong count
or outside the codebook) raises :class:`videopoet.core.errors.ConfigError`.

The checks (each one test of :class:`TokenizerContractTests`):

- ``shapes``: ``encode`` returns exactly the declared number of ids, for a 1-frame image and
  ``1 + f`` and ``1 + 2f`` frame clips (visual), or three lengths of audio, one ending in a
  partial frame;
- ``ranges``: the ids have an integer dtype and lie in ``[0, codebook size)`` (per level for
  audio);
- ``round_trip``: ``decode(encode(x))`` has the input's shape (audio: whole latent frames ×
  hop length) and finite values in ``[-1, 1]``; ``encode(decode(ids))`` gives ids of the same
  shape and range (equality is not required: an untrained network need not reproduce its ids);
- ``determinism``: encoding one input twice gives identical ids, decoding one set of ids twice
  the same media; two different inputs do not give the same ids (a network whose ids do not
  depend on its input would pass every other check vacuously);
- ``causality``: changing the frames (samples) after a point leaves the ids of every latent
  frame before it unchanged, and changing the ids of later latent frames leaves the decoded
  frames (samples) of earlier ones unchanged. The visual tokenizer must be causal (the
  declaration says so; ``check_decoder_causality=False`` waives the decoder's half). The audio
  check is **opt-in** (``check_causality=True``), because the built-in EnCodec is not causal at
  the start of a clip: its "causal" SEANet convolutions pad the left edge by reflection, so
  latent frames 0..2 depend on audio up to latent frame 6 (120 ms at 50 Hz), and decoded
  frames 0..5 on the ids of latent frames up to 6; a change at latent frame 7 or later reaches
  no earlier frame, in the encoder or the decoder (measured on the built-in networks, trained
  and untrained). ``start_lookahead_frames=6`` makes the check change only frames after that,
  ``lookahead_frames=N`` allows a bounded look-ahead everywhere;
- ``geometry``: bad geometries raise ``ConfigError`` (see above).

A network is put in eval mode and run under ``torch.no_grad()``. A network whose codebooks are
initialised by its first training pass (EnCodec's k-means) encodes every input to the same ids
until then, and fails ``determinism``: give such a network one training pass first (see
``docs/plugins.md``).
"""

from __future__ import annotations

from typing import Any

import torch

from videopoet.core.declarations import AudioTokenizerSpec, TokenizerSpec, VisualTokenizerSpec
from videopoet.core.errors import ConfigError
from videopoet.core.plugins import get_registry

__all__ = [
    "TokenizerContractTests",
    "check_audio_tokenizer",
    "check_tokenizer",
    "check_visual_tokenizer",
]

#: the checks, in order; each is a method of the probes below and a test of the mixin
CHECKS = ("shapes", "ranges", "round_trip", "determinism", "causality", "geometry")
#: slack on the [-1, 1] range of decoded media
RANGE_TOLERANCE = 1e-3
#: how far a decoded frame (sample) may move when only later latent frames change
DECODE_ATOL = 1e-5
BATCH = 2


def _is_integer(ids: Any) -> bool:
    return (
        isinstance(ids, torch.Tensor)
        and not ids.is_floating_point()
        and not ids.is_complex()
        and ids.dtype != torch.bool
    )


def _device(network: Any) -> torch.device:
    try:
        return next(network.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")


def _build(spec: TokenizerSpec, factory_kwargs: dict[str, Any]) -> Any:
    if spec.factory is None:
        raise AssertionError(f"tokenizer {spec.name}: declares no factory; pass network=")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return spec.factory(**factory_kwargs)


class _Probe:
    """What both modalities share: calling the network and phrasing failures."""

    def __init__(self, spec: TokenizerSpec, network: Any) -> None:
        self.spec = spec
        self.net = network
        self.name = f"tokenizer {spec.name}"
        if callable(getattr(network, "eval", None)):
            network.eval()
        self.device = _device(network)

    def fail(self, where: str, what: str) -> AssertionError:
        return AssertionError(f"{self.name}: {where}: {what}")

    def call(self, method: str, where: str, *args: Any) -> Any:
        """``network.method(*args)``; an exception becomes an AssertionError naming the input."""
        try:
            with torch.no_grad():
                return getattr(self.net, method)(*args)
        except Exception as exc:
            raise self.fail(where, f"raised {type(exc).__name__}: {exc}") from exc

    def expect_ids(self, ids: Any, where: str, shape: tuple[int, ...]) -> torch.Tensor:
        if not isinstance(ids, torch.Tensor):
            raise self.fail(where, f"returned {type(ids).__name__}, expected a torch.Tensor of ids")
        if tuple(ids.shape) != shape:
            raise self.fail(where, f"returned ids of shape {tuple(ids.shape)}, expected {shape}")
        if not _is_integer(ids):
            raise self.fail(where, f"returned ids of dtype {ids.dtype}, expected an integer dtype")
        return ids

    def expect_range(self, ids: torch.Tensor, where: str, size: int, part: str = "") -> None:
        if not ids.numel():
            return
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= size:
            raise self.fail(where, f"{part}ids span [{lo}, {hi}], expected [0, {size})")

    def expect_media(self, media: Any, where: str, shape: tuple[int, ...]) -> torch.Tensor:
        if not isinstance(media, torch.Tensor) or not media.is_floating_point():
            kind = getattr(media, "dtype", type(media).__name__)
            raise self.fail(where, f"returned {kind}, expected a floating-point torch.Tensor")
        if tuple(media.shape) != shape:
            raise self.fail(where, f"returned shape {tuple(media.shape)}, expected {shape}")
        if not torch.isfinite(media).all():
            bad = int((~torch.isfinite(media)).sum())
            raise self.fail(where, f"{bad} of {media.numel()} values are not finite")
        lo, hi = (float(v) for v in media.float().aminmax())
        if lo < -1 - RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            raise self.fail(where, f"values span [{lo:.4g}, {hi:.4g}], expected [-1, 1]")
        return media

    def expect_config_error(self, method: str, where: str, why: str, *args: Any) -> None:
        try:
            with torch.no_grad():
                getattr(self.net, method)(*args)
        except ConfigError:
            return
        except Exception as exc:
            raise self.fail(
                where,
                f"raised {type(exc).__name__} ({exc}); expected "
                f"videopoet.core.errors.ConfigError ({why})",
            ) from exc
        raise self.fail(where, f"was accepted; expected videopoet.core.errors.ConfigError ({why})")

    def run(self, checks: tuple[str, ...] = CHECKS) -> list[str]:
        return [getattr(self, check)() for check in checks]


# ---------------------------------------------------------------------------- visual


class _VisualProbe(_Probe):
    spec: VisualTokenizerSpec

    def __init__(
        self, spec: VisualTokenizerSpec, network: Any, check_decoder_causality: bool = True
    ) -> None:
        super().__init__(spec, network)
        self.check_decoder_causality = check_decoder_causality
        f, s = spec.temporal_factor, spec.spatial_factor
        # an image, then clips; width != height so that a swapped axis shows
        self.geometries = [(1, 2 * s, 3 * s), (1 + f, 2 * s, 3 * s), (1 + 2 * f, 3 * s, 2 * s)]
        self.size = 2**spec.codebook_bits

    @staticmethod
    def where(frames: int, height: int, width: int, batch: int = BATCH) -> str:
        return f"video {frames}x{height}x{width} (frames x height x width, batch {batch})"

    def clip(self, frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        shape = (BATCH, self.spec.channels, frames, height, width)
        return (torch.rand(shape, generator=gen) * 2 - 1).to(self.device)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        frames, height, width = video.shape[2:]
        where = f"encode({self.where(frames, height, width)})"
        shape = (video.shape[0], self.spec.token_count(frames, height, width))
        return self.expect_ids(self.call("encode", where, video), where, shape)

    def decode(self, ids: torch.Tensor, geometry: tuple[int, int, int]) -> torch.Tensor:
        latent = self.spec.latent_shape(*geometry)
        where = f"decode(ids of {self.where(*geometry, batch=ids.shape[0])}, {latent})"
        video = self.call("decode", where, ids, latent)
        shape = (ids.shape[0], self.spec.channels, *geometry)
        return self.expect_media(video, where, shape)

    def shapes(self) -> str:
        for geometry in self.geometries:
            declared = self.spec.latent_shape(*geometry)
            where = f"encode({self.where(*geometry)})"
            ids = self.call("encode", where, self.clip(*geometry))
            count = self.spec.token_count(*geometry)
            if not isinstance(ids, torch.Tensor) or tuple(ids.shape) != (BATCH, count):
                got = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
                raise self.fail(
                    where,
                    f"returned ids of shape {got}, expected ({BATCH}, {count}): "
                    f"the declared latent shape {declared} flattened per clip",
                )
            if callable(getattr(self.net, "latent_shape", None)):
                own = tuple(self.net.latent_shape(*geometry))
                if own != declared:
                    raise self.fail(
                        f"network.latent_shape{geometry}",
                        f"is {own}, but the declaration says {declared}",
                    )
        shown = ", ".join("x".join(map(str, g)) for g in self.geometries)
        return f"{self.spec.name}: token shapes at {shown}"

    def ranges(self) -> str:
        for geometry in self.geometries:
            ids = self.encode(self.clip(*geometry))
            self.expect_range(ids, f"encode({self.where(*geometry)})", self.size)
        return f"{self.spec.name}: ids are integers in [0, {self.size})"

    def round_trip(self) -> str:
        agree, total = 0, 0
        for geometry in self.geometries:
            ids = self.encode(self.clip(*geometry))
            video = self.decode(ids, geometry)
            where = f"encode(decode(encode({self.where(*geometry)})))"
            again = self.expect_ids(self.call("encode", where, video), where, tuple(ids.shape))
            self.expect_range(again, where, self.size)
            agree += int((again.cpu() == ids.cpu()).sum())
            total += ids.numel()
        return f"{self.spec.name}: round trip; re-encoding kept {agree / total:.0%} of the ids"

    def determinism(self) -> str:
        geometry = self.geometries[-1]
        video = self.clip(*geometry)
        first, second = self.encode(video), self.encode(video.clone())
        where = self.where(*geometry)
        if not torch.equal(first.cpu(), second.cpu()):
            n = int((first.cpu() != second.cpu()).sum())
            raise self.fail(
                f"encode({where}) twice", f"{n} of {first.numel()} ids differ between calls"
            )
        a, b = self.decode(first, geometry), self.decode(first, geometry)
        if not torch.allclose(a, b, atol=DECODE_ATOL, rtol=0):
            diff = float((a - b).abs().max())
            raise self.fail(f"decode(ids of {where}) twice", f"outputs differ by up to {diff:.3g}")
        other = self.encode(self.clip(*geometry, seed=1))
        if torch.equal(first.cpu(), other.cpu()):
            raise self.fail(
                f"encode({where}) of two different random clips",
                "gave identical ids: the ids do not depend on the input (an untrained network "
                "whose codebooks are not initialised yet?)",
            )
        return f"{self.spec.name}: deterministic encode and decode; ids depend on the input"

    def causality(self) -> str:
        f = self.spec.temporal_factor
        geometry = self.geometries[-1]
        frames = geometry[0]
        latent = self.spec.latent_shape(*geometry)
        video, other = self.clip(*geometry), self.clip(*geometry, seed=1)
        base = self.encode(video).cpu().reshape(BATCH, latent[0], -1)
        where = self.where(*geometry)
        # cut after the last frame of a latent frame, and one frame before it
        cuts = sorted(
            {(j - 1) * f for j in range(1, latent[0])} | {j * f - 1 for j in range(1, latent[0])}
        )
        for cut in cuts:
            changed = video.clone()
            changed[:, :, cut + 1 :] = other[:, :, cut + 1 :]
            ids = self.encode(changed).cpu().reshape(BATCH, latent[0], -1)
            for j in range(cut // f + 1):
                if not torch.equal(ids[:, j], base[:, j]):
                    covers = "frame 0" if j == 0 else f"frames {(j - 1) * f + 1}..{j * f}"
                    n = int((ids[:, j] != base[:, j]).sum())
                    raise self.fail(
                        f"encode({where}) with frames {cut + 1}..{frames - 1} changed",
                        f"{n} ids of latent frame {j} (which covers {covers}, all <= {cut}) "
                        "changed: the encoder is not causal",
                    )
        done = f"{self.spec.name}: causal encoder (cuts after frames {cuts})"
        if not self.check_decoder_causality:
            return done
        ids = base.reshape(BATCH, -1).to(self.device)
        gen = torch.Generator().manual_seed(2)
        noise = torch.randint(0, self.size, ids.shape, generator=gen).to(ids)
        decoded = self.decode(ids, geometry)
        per_frame = latent[1] * latent[2]
        for j in range(1, latent[0]):
            mixed = ids.clone()
            mixed[:, j * per_frame :] = noise[:, j * per_frame :]
            kept = 1 + (j - 1) * f
            diff = float((self.decode(mixed, geometry) - decoded)[:, :, :kept].abs().max())
            if diff > DECODE_ATOL:
                raise self.fail(
                    f"decode(ids of {where}) with latent frames {j}..{latent[0] - 1} changed",
                    f"decoded frames 0..{kept - 1} moved by up to {diff:.3g}: the decoder is not "
                    "causal (check_decoder_causality=False if that is by design)",
                )
        return done + " and decoder"

    def geometry(self) -> str:
        f, s = self.spec.temporal_factor, self.spec.spatial_factor
        bad = []
        if f > 1:
            bad.append(((2, 2 * s, 3 * s), f"frames must be 1 + {f}k"))
        if s > 1:
            bad.append(((1, 2 * s + 1, 3 * s), f"height must be a multiple of {s}"))
            bad.append(((1 + f, 2 * s, 3 * s - 1), f"width must be a multiple of {s}"))
        for geometry, why in bad:
            where = f"spec.latent_shape{geometry}"
            try:
                self.spec.latent_shape(*geometry)
            except ConfigError:
                pass
            else:
                raise self.fail(where, f"was accepted; expected ConfigError ({why})")
            video = self.clip(*geometry)
            self.expect_config_error("encode", f"encode({self.where(*geometry)})", why, video)
        geometry = self.geometries[1]
        latent = self.spec.latent_shape(*geometry)
        ids = self.encode(self.clip(*geometry))
        where = f"decode(ids, {latent})"
        self.expect_config_error(
            "decode", f"{where} with one id too few", "wrong id count", ids[:, :-1], latent
        )
        for value in (-1, self.size):
            wrong = ids.clone()
            wrong[0, 0] = value
            self.expect_config_error(
                "decode", f"{where} with an id {value}", f"ids in [0, {self.size})", wrong, latent
            )
        return f"{self.spec.name}: bad geometries and bad ids raise ConfigError"


# ---------------------------------------------------------------------------- audio


class _AudioProbe(_Probe):
    spec: AudioTokenizerSpec

    def __init__(
        self,
        spec: AudioTokenizerSpec,
        network: Any,
        check_causality: bool = False,
        lookahead_frames: int = 0,
        start_lookahead_frames: int = 0,
    ) -> None:
        super().__init__(spec, network)
        self.check_causality = check_causality
        self.lookahead = lookahead_frames
        self.start_lookahead = start_lookahead_frames
        hop = spec.hop_length
        # one latent frame, twelve, and ten and a half (the partial frame is dropped)
        self.lengths = [hop, 12 * hop, 10 * hop + hop // 2]

    def frames(self, samples: int) -> int:
        return self.spec.latent_frames(samples / self.spec.sample_rate)

    def where(self, samples: int, batch: int = BATCH) -> str:
        seconds = samples / self.spec.sample_rate
        return f"waveform of {samples} samples ({seconds:g} s, batch {batch})"

    def wav(self, samples: int, seed: int = 0) -> torch.Tensor:
        """Tones plus noise in [-1, 1], one row per batch entry."""
        gen = torch.Generator().manual_seed(seed)
        t = torch.arange(samples) / self.spec.sample_rate
        pitch = 110 * 2 ** (torch.rand(BATCH, 1, generator=gen) * 4)
        tone = 0.5 * torch.sin(2 * torch.pi * pitch * t)
        noise = 0.1 * torch.randn(BATCH, samples, generator=gen)
        return (tone + noise)[:, None].to(self.device)

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        samples = wav.shape[-1]
        where = f"encode({self.where(samples)})"
        shape = (wav.shape[0], self.spec.token_count(samples / self.spec.sample_rate))
        return self.expect_ids(self.call("encode", where, wav), where, shape)

    def decode(self, ids: torch.Tensor, samples: int) -> torch.Tensor:
        frames = self.frames(samples)
        where = f"decode(ids of {self.where(samples, batch=ids.shape[0])})"
        wav = self.call("decode", where, ids)
        return self.expect_media(wav, where, (ids.shape[0], 1, frames * self.spec.hop_length))

    def levels(self, ids: torch.Tensor) -> torch.Tensor:
        """Level-major ids (B, levels * frames) → (B, levels, frames) on the CPU."""
        return ids.cpu().reshape(ids.shape[0], self.spec.levels, -1)

    def shapes(self) -> str:
        for samples in self.lengths:
            where = f"encode({self.where(samples)})"
            ids = self.call("encode", where, self.wav(samples))
            frames = self.frames(samples)
            count = frames * self.spec.levels
            if not isinstance(ids, torch.Tensor) or tuple(ids.shape) != (BATCH, count):
                got = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
                raise self.fail(
                    where,
                    f"returned ids of shape {got}, expected ({BATCH}, {count}): {frames} whole "
                    f"latent frames x {self.spec.levels} levels",
                )
        return f"{self.spec.name}: token counts at {self.lengths} samples"

    def ranges(self) -> str:
        for samples in self.lengths:
            codes = self.levels(self.encode(self.wav(samples)))
            for level in range(self.spec.levels):
                self.expect_range(
                    codes[:, level],
                    f"encode({self.where(samples)})",
                    self.spec.codebook_size,
                    f"level {level} (level-major block {level}) ",
                )
        return f"{self.spec.name}: ids are integers in [0, {self.spec.codebook_size}) per level"

    def round_trip(self) -> str:
        agree, total = 0, 0
        for samples in self.lengths:
            ids = self.encode(self.wav(samples))
            wav = self.decode(ids, samples)
            where = f"encode(decode(encode({self.where(samples)})))"
            again = self.expect_ids(self.call("encode", where, wav), where, tuple(ids.shape))
            for level, codes in enumerate(self.levels(again).unbind(1)):
                self.expect_range(codes, where, self.spec.codebook_size, f"level {level} ")
            agree += int((again.cpu() == ids.cpu()).sum())
            total += ids.numel()
        return f"{self.spec.name}: round trip; re-encoding kept {agree / total:.0%} of the ids"

    def determinism(self) -> str:
        samples = self.lengths[1]
        wav = self.wav(samples)
        first, second = self.encode(wav), self.encode(wav.clone())
        where = self.where(samples)
        if not torch.equal(first.cpu(), second.cpu()):
            n = int((first.cpu() != second.cpu()).sum())
            raise self.fail(
                f"encode({where}) twice", f"{n} of {first.numel()} ids differ between calls"
            )
        a, b = self.decode(first, samples), self.decode(first, samples)
        if not torch.allclose(a, b, atol=DECODE_ATOL, rtol=0):
            diff = float((a - b).abs().max())
            raise self.fail(f"decode(ids of {where}) twice", f"outputs differ by up to {diff:.3g}")
        other = self.encode(self.wav(samples, seed=1))
        if torch.equal(first.cpu(), other.cpu()):
            raise self.fail(
                f"encode({where}) of two different sounds",
                "gave identical ids: the ids do not depend on the input (an untrained network "
                "whose codebooks are not initialised yet?)",
            )
        return f"{self.spec.name}: deterministic encode and decode; ids depend on the input"

    def causality(self) -> str:
        if not self.check_causality:
            return f"{self.spec.name}: causality not checked (opt in with check_causality=True)"
        hop, start, ahead = self.spec.hop_length, self.start_lookahead, self.lookahead
        first = start + 1  # the first latent frame a change may start at
        total = first + 12
        samples = total * hop
        wav, other = self.wav(samples), self.wav(samples, seed=1)
        base = self.levels(self.encode(wav))
        where = self.where(samples)
        hint = (
            "the encoder is not causal, or its ids are not level-major (options: "
            "lookahead_frames=N for a bounded look-ahead, start_lookahead_frames=N for one at "
            "the start of a clip only)"
        )
        cuts = [first * hop, (first + 3) * hop + hop // 2, (first + 8) * hop - 1]
        for cut in cuts:
            changed = wav.clone()
            changed[..., cut:] = other[..., cut:]
            codes = self.levels(self.encode(changed))
            for j in range(max(0, cut // hop - ahead)):
                diff = codes[:, :, j] != base[:, :, j]
                if diff.any():
                    level = int(diff.nonzero()[0, 1])
                    raise self.fail(
                        f"encode({where}) with samples {cut}.. changed",
                        f"the level-{level} id of latent frame {j} (samples {j * hop}.."
                        f"{(j + 1) * hop - 1}) changed: {hint}",
                    )
        ids = base.reshape(BATCH, -1).to(self.device)
        gen = torch.Generator().manual_seed(2)
        noise = torch.randint(0, self.spec.codebook_size, base.shape, generator=gen)
        decoded = self.decode(ids, samples)
        for j in (first, first + 5):
            mixed = base.clone()
            mixed[:, :, j:] = noise[:, :, j:]
            kept = max(0, j - ahead) * hop
            out = self.decode(mixed.reshape(BATCH, -1).to(ids), samples)
            diff = float((out - decoded)[..., :kept].abs().max()) if kept else 0.0
            if diff > DECODE_ATOL:
                raise self.fail(
                    f"decode(ids of {where}) with latent frames {j}..{total - 1} changed",
                    f"decoded samples 0..{kept - 1} moved by up to {diff:.3g}: the decoder is "
                    "not causal",
                )
        return (
            f"{self.spec.name}: causal encoder and decoder (cuts at samples {cuts}, "
            f"look-ahead {ahead} frames, {start} at the start)"
        )

    def geometry(self) -> str:
        hop, levels, size = self.spec.hop_length, self.spec.levels, self.spec.codebook_size
        if hop > 1:
            self.expect_config_error(
                "encode",
                f"encode({self.where(hop - 1)})",
                f"at least one latent frame of {hop} samples",
                self.wav(hop - 1),
            )
        samples = self.lengths[1]
        ids = self.encode(self.wav(samples))
        where = f"decode(ids of {self.where(samples)})"
        if levels > 1:
            self.expect_config_error(
                "decode", f"{where} with one id too few", f"a multiple of {levels} ids", ids[:, :-1]
            )
        for value in (-1, size):
            wrong = ids.clone()
            wrong[0, -1] = value  # the last level's block
            self.expect_config_error(
                "decode", f"{where} with an id {value}", f"ids in [0, {size})", wrong
            )
        return f"{self.spec.name}: bad lengths and bad ids raise ConfigError"


# ---------------------------------------------------------------------------- entry points


def _probe(spec: TokenizerSpec, network: Any, options: dict[str, Any]) -> _Probe:
    if isinstance(spec, VisualTokenizerSpec):
        return _VisualProbe(spec, network, **options)
    if isinstance(spec, AudioTokenizerSpec):
        return _AudioProbe(spec, network, **options)
    raise AssertionError(
        f"tokenizer {spec.name}: modality {spec.modality!r} has no contract "
        "(expected a VisualTokenizerSpec or an AudioTokenizerSpec)"
    )


def check_visual_tokenizer(
    spec: VisualTokenizerSpec,
    network: Any = None,
    *,
    check_decoder_causality: bool = True,
    **factory_kwargs: Any,
) -> list[str]:
    """Run the whole contract on a visual tokenizer; returns what was checked.

    ``network``: a built or loaded network; by default ``spec.factory(**factory_kwargs)``
    (seeded with 0, so a failure reproduces).
    """
    if network is None:
        network = _build(spec, factory_kwargs)
    return _VisualProbe(spec, network, check_decoder_causality).run()


def check_audio_tokenizer(
    spec: AudioTokenizerSpec,
    network: Any = None,
    *,
    check_causality: bool = False,
    lookahead_frames: int = 0,
    start_lookahead_frames: int = 0,
    **factory_kwargs: Any,
) -> list[str]:
    """Run the whole contract on an audio tokenizer; returns what was checked.

    Causality is opt-in (``check_causality=True``): the built-in EnCodec is causal except at
    the start of a clip (see the module docstring). ``lookahead_frames``: latent frames just
    before a change that may change with it; ``start_lookahead_frames``: how far the first
    latent frames of a clip may see ahead (changes are then made after that frame only; 6 for
    the built-in EnCodec). ``network``: as in :func:`check_visual_tokenizer`.
    """
    if network is None:
        network = _build(spec, factory_kwargs)
    options = dict(
        check_causality=check_causality,
        lookahead_frames=lookahead_frames,
        start_lookahead_frames=start_lookahead_frames,
    )
    return _AudioProbe(spec, network, **options).run()


def check_tokenizer(spec: TokenizerSpec, network: Any = None, **kwargs: Any) -> list[str]:
    """:func:`check_visual_tokenizer` or :func:`check_audio_tokenizer`, by the spec's modality."""
    if isinstance(spec, VisualTokenizerSpec):
        return check_visual_tokenizer(spec, network, **kwargs)
    if isinstance(spec, AudioTokenizerSpec):
        return check_audio_tokenizer(spec, network, **kwargs)
    raise AssertionError(
        f"tokenizer {spec.name}: modality {spec.modality!r} has no contract "
        "(expected a VisualTokenizerSpec or an AudioTokenizerSpec)"
    )


class TokenizerContractTests:
    """Subclass in a plugin's tests and set ``tokenizer_name``; pytest collects the checks.

    ``factory_kwargs``: keyword arguments of the declaration's factory (a tiny network);
    ``contract_options``: ``check_decoder_causality`` (visual) or ``check_causality`` /
    ``lookahead_frames`` (audio). Override :meth:`build_network` to load weights or to give the
    network a first training pass. The network is built once per class.
    """

    tokenizer_name: str = ""
    factory_kwargs: dict[str, Any] = {}
    contract_options: dict[str, Any] = {}

    def tokenizer_spec(self) -> TokenizerSpec:
        assert self.tokenizer_name, "set tokenizer_name on the TokenizerContractTests subclass"
        return get_registry().tokenizer(self.tokenizer_name)

    def build_network(self) -> Any:
        return _build(self.tokenizer_spec(), dict(self.factory_kwargs))

    def _contract_probe(self) -> _Probe:
        cls = type(self)
        probe = cls.__dict__.get("_probe_cache")
        if probe is None:
            probe = _probe(self.tokenizer_spec(), self.build_network(), self.contract_options)
            cls._probe_cache = probe
        return probe

    def test_token_shapes_match_the_declaration(self) -> None:
        self._contract_probe().shapes()

    def test_ids_are_integers_in_the_codebook(self) -> None:
        self._contract_probe().ranges()

    def test_encode_decode_round_trip(self) -> None:
        self._contract_probe().round_trip()

    def test_deterministic_and_input_dependent(self) -> None:
        self._contract_probe().determinism()

    def test_causality(self) -> None:
        self._contract_probe().causality()

    def test_bad_geometry_is_a_config_error(self) -> None:
        self._contract_probe().geometry()
