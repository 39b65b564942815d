"""Every registered tokenizer, ours and third parties', passes the tokenizer contract.

The built-in declarations are checked on small networks (the checks look at geometry, ranges,
determinism and causality, not at quality), and the committed trained tokenizers as loaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from videopoet.core.errors import ConfigError
from videopoet.core.plugins import get_registry
from videopoet.plugins.encodec_audio.model import EncodecTokenizer
from videopoet.plugins.magvit.model import MagvitTokenizer
from videopoet.testing_tokenizers import (
    TokenizerContractTests,
    check_audio_tokenizer,
    check_tokenizer,
    check_visual_tokenizer,
)

ROOT = Path(__file__).resolve().parents[1]
TOKENIZERS = sorted(get_registry().tokenizers)

#: small networks for the built-in declarations (defaults: 18.5 M and 14.9 M parameters)
SMALL = {
    "magvit2": {"channels": 4, "num_res_blocks": 1, "mid_blocks": 0},
    "encodec16k": {"n_filters": 4, "dimension": 16, "lstm": 1, "kmeans_iters": 2},
}
#: EnCodec pads its causal convolutions by reflection: the first latent frames see up to frame 6
ENCODEC_CAUSALITY = {"check_causality": True, "start_lookahead_frames": 6}

pytestmark = pytest.mark.usefixtures("one_thread")


def prime(network: EncodecTokenizer) -> EncodecTokenizer:
    """One training-mode pass: EnCodec's codebooks are k-means-initialised on the first batch
    (before it every input encodes to id 0)."""
    gen = torch.Generator().manual_seed(5)
    network.train()
    with torch.no_grad():
        network(0.3 * torch.randn(4, 1, 8000, generator=gen))
    return network.eval()


def build(name: str, **kwargs):
    spec = get_registry().tokenizer(name)
    torch.manual_seed(0)
    network = spec.factory(**{**SMALL.get(name, {}), **kwargs})
    return prime(network) if isinstance(network, EncodecTokenizer) else network


def options(network) -> dict:
    return ENCODEC_CAUSALITY if isinstance(network, EncodecTokenizer) else {}


@pytest.fixture(scope="module")
def magvit():
    return build("magvit2_tiny")


@pytest.fixture(scope="module")
def encodec():
    return build("encodec16k_tiny")


# ---------------------------------------------------------------------------- every tokenizer


@pytest.mark.parametrize("name", TOKENIZERS)
def test_tokenizer_contract(registry, name):
    network = build(name)
    done = check_tokenizer(registry.tokenizer(name), network, **options(network))
    assert len(done) == 6, done


@pytest.mark.parametrize(
    "directory,loader",
    [("magvit2_tiny_world", MagvitTokenizer), ("encodec16k_tiny_world", EncodecTokenizer)],
)
def test_committed_tokenizers_pass_the_contract(registry, directory, loader):
    network = loader.from_pretrained(ROOT / "checkpoints" / directory)
    done = check_tokenizer(registry.tokenizer(network.config.name), network, **options(network))
    assert len(done) == 6, done


class TestMagvitTinyMixin(TokenizerContractTests):
    tokenizer_name = "magvit2_tiny"
    factory_kwargs = {"channels": 4}


class TestEncodecTinyMixin(TokenizerContractTests):
    tokenizer_name = "encodec16k_tiny"
    contract_options = ENCODEC_CAUSALITY

    def build_network(self):
        return prime(super().build_network())


# ---------------------------------------------------------------------------- broken tokenizers


class Wrapped:
    """A network with its ``encode`` and/or ``decode`` replaced; the rest is the real one's."""

    def __init__(self, network, encode=None, decode=None):
        self.network = network
        self._encode, self._decode = encode, decode

    def encode(self, x):
        return self._encode(self.network, x) if self._encode else self.network.encode(x)

    def decode(self, *args):
        return self._decode(self.network, *args) if self._decode else self.network.decode(*args)

    def __getattr__(self, name):
        return getattr(self.network, name)


def _cropped(net, video):
    """Crops a clip to a valid geometry instead of refusing it."""
    frames, height, width = video.shape[2:]
    return net.encode(video[:, :, : 1 + (frames - 1) // 4 * 4, : height // 8 * 8, : width // 8 * 8])


def _value_error(net, video):
    try:
        return net.encode(video)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def _noisy(net, video):
    ids = net.encode(video)
    return (ids + torch.randint(0, 2, ids.shape)) % 1024


BROKEN_VISUAL = {
    "one token too many": (
        lambda net, v: torch.cat([net.encode(v), net.encode(v)[:, :1]], 1),
        None,
        r"encode\(video 1x16x24 .*\): returned ids of shape \(2, 7\), expected \(2, 6\): "
        r"the declared latent shape \(1, 2, 3\)",
    ),
    "ids past the codebook": (
        lambda net, v: net.encode(v) + 512,
        None,
        r"encode\(video 1x16x24 .*\): ids span \[\d+, \d+\], expected \[0, 1024\)",
    ),
    "float ids": (
        lambda net, v: net.encode(v).float(),
        None,
        r"encode\(video 1x16x24 .*\): returned ids of dtype torch.float32, "
        r"expected an integer dtype",
    ),
    "decoder drops a frame": (
        None,
        lambda net, ids, shape: net.decode(ids, shape)[:, :, :-1],
        r"decode\(ids of video 1x16x24 .*\): returned shape \(2, 3, 0, 16, 24\), "
        r"expected \(2, 3, 1, 16, 24\)",
    ),
    "decoder out of range": (
        None,
        lambda net, ids, shape: 2 * net.decode(ids, shape),
        r"decode\(.*\): values span \[.*\], expected \[-1, 1\]",
    ),
    "non-deterministic": (_noisy, None, r"encode\(video 9x24x16 .*\) twice: \d+ of 36 ids differ"),
    "constant": (
        lambda net, v: torch.zeros_like(net.encode(v)),
        None,
        r"encode\(video 9x24x16 .*\) of two different random clips: gave identical ids: "
        r"the ids do not depend on the input",
    ),
    "encoder sees the future": (
        lambda net, v: net.encode(v.flip(2)),
        None,
        r"encode\(video 9x24x16 .*\) with frames 1\.\.8 changed: \d+ ids of latent frame 0 "
        r"\(which covers frame 0, all <= 0\) changed: the encoder is not causal",
    ),
    "decoder sees the future": (
        None,
        lambda net, ids, shape: net.decode(ids, shape).flip(2),
        r"decode\(ids of video 9x24x16 .*\) with latent frames 1\.\.2 changed: "
        r"decoded frames 0\.\.0 moved by up to .*: "
        r"the decoder is not causal",
    ),
    "bad frame count accepted": (
        _cropped,
        None,
        r"encode\(video 2x16x24 .*\): was accepted; expected videopoet.core.errors.ConfigError "
        r"\(frames must be 1 \+ 4k\)",
    ),
    "bad frame count is a ValueError": (
        _value_error,
        None,
        r"encode\(video 2x16x24 .*\): raised ValueError \(frames=2: .*\); "
        r"expected videopoet.core.errors.ConfigError",
    ),
}


@pytest.mark.parametrize("case", BROKEN_VISUAL)
def test_contract_catches_a_broken_visual_tokenizer(registry, magvit, case):
    encode, decode, message = BROKEN_VISUAL[case]
    broken = Wrapped(magvit, encode, decode)
    with pytest.raises(AssertionError, match="^tokenizer magvit2_tiny: " + message):
        check_visual_tokenizer(registry.tokenizer("magvit2_tiny"), broken)


def _frame_major(net, wav):
    codes = net.encode_codes(wav)  # (B, levels, frames)
    return codes.transpose(1, 2).reshape(codes.shape[0], -1)


def _from_frame_major(net, ids):
    codes = ids.reshape(ids.shape[0], -1, net.levels).transpose(1, 2)
    return net.decode_codes(codes)


BROKEN_AUDIO = {
    "one token too many": (
        lambda net, w: torch.cat([net.encode(w), net.encode(w)[:, :1]], 1),
        None,
        r"encode\(waveform of 320 samples \(0.02 s, batch 2\)\): returned ids of shape \(2, 3\), "
        r"expected \(2, 2\): 1 whole latent frames x 2 levels",
    ),
    "ids past the codebook": (
        lambda net, w: net.encode(w) + 64,
        None,
        r"encode\(waveform .*\): level 0 \(level-major block 0\) ids span \[\d+, \d+\], "
        r"expected \[0, 64\)",
    ),
    "decoder one hop short": (
        None,
        lambda net, ids: net.decode(ids)[..., :-320],
        r"decode\(ids of waveform of 320 samples .*\): returned shape \(2, 1, 0\), "
        r"expected \(2, 1, 320\)",
    ),
    "decoder unclamped": (
        None,
        lambda net, ids: net.decode(ids) * 10,
        r"decode\(.*\): values span \[.*\], expected \[-1, 1\]",
    ),
    "frame-major ids": (
        _frame_major,
        _from_frame_major,
        r"encode\(waveform of 6080 samples .*\) with samples 2240\.\. changed: the level-1 id of "
        r"latent frame \d+ .* changed: the encoder is not causal, or its ids are not level-major",
    ),
    "short input accepted": (
        lambda net, w: net.encode(torch.nn.functional.pad(w, (0, max(0, 320 - w.shape[-1])))),
        None,
        r"encode\(waveform of 319 samples .*\): was accepted; "
        r"expected videopoet.core.errors.ConfigError \(at least one latent frame of 320 samples\)",
    ),
}


@pytest.mark.parametrize("case", BROKEN_AUDIO)
def test_contract_catches_a_broken_audio_tokenizer(registry, encodec, case):
    encode, decode, message = BROKEN_AUDIO[case]
    broken = Wrapped(encodec, encode, decode)
    with pytest.raises(AssertionError, match="^tokenizer encodec16k_tiny: " + message):
        check_audio_tokenizer(registry.tokenizer("encodec16k_tiny"), broken, **ENCODEC_CAUSALITY)


def test_an_unprimed_encodec_encodes_everything_to_one_id(registry):
    spec = registry.tokenizer("encodec16k_tiny")
    with pytest.raises(AssertionError, match="ids do not depend on the input"):
        check_audio_tokenizer(spec)  # the factory's network, k-means not run yet


def test_encodec_sees_six_frames_ahead_at_the_start_of_a_clip(registry, encodec):
    spec = registry.tokenizer("encodec16k_tiny")
    check_audio_tokenizer(spec, encodec, check_causality=True, start_lookahead_frames=6)
    with pytest.raises(AssertionError, match="not causal"):
        check_audio_tokenizer(spec, encodec, check_causality=True, start_lookahead_frames=5)


def test_audio_causality_is_opt_in(registry):
    spec = registry.tokenizer("encodec16k_tiny")
    symmetric = build("encodec16k_tiny", causal=False)  # SEANet padded on both sides
    assert len(check_audio_tokenizer(spec, symmetric)) == 6
    with pytest.raises(AssertionError, match="not causal"):
        check_audio_tokenizer(spec, symmetric, **ENCODEC_CAUSALITY)


def test_a_declaration_without_factory_needs_a_network(registry):
    spec = registry.tokenizer("magvit2_tiny").model_copy(update={"factory": None})
    with pytest.raises(AssertionError, match="tokenizer magvit2_tiny: declares no factory"):
        check_tokenizer(spec)
