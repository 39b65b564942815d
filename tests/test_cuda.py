"""The CUDA paths: attention backends, the LM, decoding, bfloat16 training, the tokenizers.

Every test here needs a CUDA device and is skipped without one (CI has none). They check that
what the CPU suite proves also holds on the GPU: the three attention backends (SDPA, compiled
FlexAttention, xformers when installed) compute the same prefix-LM attention and gradients, the
model gives the CPU's loss, the KV cache decodes what recomputation decodes, and bfloat16
autocast training learns.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from videopoet.core import attention
from videopoet.core.attention import attend, resolve_backend
from videopoet.core.declarations import Format
from videopoet.core.generation import generate
from videopoet.core.model import ModelConfig, PrefixLM
from videopoet.core.training import TrainConfig, train
from videopoet.sequences.layout import build_layout

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

#: xformers installed with kernels that run here (a wheel for another torch has none)
HAS_XFORMERS = (
    torch.cuda.is_available()
    and importlib.util.find_spec("xformers") is not None
    and attention._xformers_failure("cuda") is None
)
GPU_BACKENDS = ["sdpa", "flex", *(["xformers"] if HAS_XFORMERS else [])]
#: largest difference from float64 SDPA, per dtype (bfloat16 keeps 8 bits of mantissa)
TOL = {torch.float32: 2e-3, torch.bfloat16: 3e-2}


def _qkv(dtype, length=300, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    shape = (2, 4, length, 64)
    return [
        torch.randn(shape, device="cuda", generator=g, dtype=torch.float32)
        .to(dtype)
        .requires_grad_()
        for _ in range(3)
    ]


def _reference(q, k, v, prefix, key_mask):
    """Float64 SDPA with the explicit mask: what every backend must reproduce."""
    q, k, v = (t.detach().double().requires_grad_() for t in (q, k, v))
    out = attend(q, k, v, prefix, key_mask, backend="sdpa")
    return out, (q, k, v)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "keymask"])
@pytest.mark.parametrize("prefix", [0, 1, 117, 300])
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_backends_match_float64_forward_and_gradients(backend, prefix, masked, dtype):
    q, k, v = _qkv(dtype)
    key_mask = None
    if masked:
        key_mask = torch.ones(2, 300, dtype=torch.bool, device="cuda")
        key_mask[0, 3:40] = False  # padded text slots of one row
        key_mask[1, 150:160] = False
    ref, ref_inputs = _reference(q, k, v, prefix, key_mask)
    out = attend(q, k, v, prefix, key_mask, backend=backend)
    assert out.dtype == dtype and out.shape == q.shape
    tol = TOL[dtype]
    assert (out.double() - ref).abs().max() < tol
    upstream = torch.randn_like(ref)
    ref.backward(upstream)
    out.backward(upstream.to(dtype))
    for mine, theirs in zip((q, k, v), ref_inputs, strict=True):
        scale = theirs.grad.abs().max().clamp_min(1.0)
        assert ((mine.grad.double() - theirs.grad).abs().max() / scale) < 4 * tol


def test_compiled_flex_is_exact_over_many_lengths():
    """A task mixture has many layout lengths (partial blocks too): each must be exact, with
    the sizes symbolic after the first recompilation rather than eager past dynamo's limit."""
    for length in (130, 257, 300, 511, 777, 1000, 1283, 1537, 1700, 2049):
        q, k, v = (t.detach() for t in _qkv(torch.bfloat16, length=length, seed=length))
        prefix = length // 3
        ref, _ = _reference(q, k, v, prefix, None)
        with torch.no_grad():
            out = attend(q, k, v, prefix, backend="flex")
        assert (out.double() - ref).abs().max() < TOL[torch.bfloat16], length


def test_auto_picks_xformers_when_its_kernels_run_else_sdpa():
    picked = resolve_backend("auto", torch.device("cuda"))
    assert picked == ("xformers" if HAS_XFORMERS else "sdpa")


def _tiny(vocab_size=300, **overrides):
    torch.manual_seed(0)
    config = ModelConfig.preset("tiny", vocab_size=vocab_size, text_dim=8, **overrides)
    return PrefixLM(config)


def _grid(length):
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, 5, (1, length, 3), generator=g)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_model_loss_and_gradients_on_cuda_match_the_cpu(backend):
    cpu = _tiny(attention="sdpa")
    gpu = _tiny(attention=backend).cuda()
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(1, 300, (2, 96), generator=g)
    text = torch.randn(2, 5, 8, generator=g)
    text_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    grid = _grid(96).expand(2, -1, -1)
    kwargs = {"text_start": 1, "grid": grid}
    want = cpu.loss(tokens, 40, text, text_mask, **kwargs)
    got = gpu.loss(tokens.cuda(), 40, text.cuda(), text_mask.cuda(), text_start=1, grid=grid.cuda())
    assert abs(got.item() - want.item()) < 1e-4
    want.backward()
    got.backward()
    for (name, a), b in zip(cpu.named_parameters(), gpu.parameters(), strict=True):
        scale = a.grad.abs().max().clamp_min(1e-3)
        assert float((b.grad.cpu() - a.grad).abs().max() / scale) < 1e-2, name


@pytest.mark.parametrize("task", ["t2v", "v2a", "fp"])
def test_kv_cache_decodes_what_recomputation_decodes_on_cuda(registry, tiny_vocab, task):
    spec = registry.task(task)
    extra = {"text_tokens": 6} if spec.prefix.text else {}
    if spec.prefix.audio or spec.target.audio:
        extra["audio_seconds"] = 0.2
    fmt = Format(frames=5, height=16, width=16)
    layout = build_layout(spec, tiny_vocab, fmt, strict_format=False, **extra)
    model = _tiny(tiny_vocab.size).cuda().eval()
    g = torch.Generator().manual_seed(0)
    content = {
        s.name: torch.randint(0, min(hi - lo for lo, hi in s.ranges), (2, s.length), generator=g)
        for s in layout.content_spans
        if not s.target
    }
    text = torch.randn(2, 4, 8, generator=g) if layout.text_span is not None else None
    inputs = {"content": content, "text_embeddings": text, "batch_size": 2}
    options = {"seed": 5, "progress": False, "cfg_scale": 2.0 if text is not None else 1.0}
    cached = generate(model, layout, tiny_vocab, **options, **inputs)
    slow = generate(model, layout, tiny_vocab, use_cache=False, **options, **inputs)
    assert cached.device.type == "cuda"
    assert cached.shape == (2, layout.target_length)
    # float32 cache and recomputation differ by rounding only: at most a rare near-tie flips
    assert (cached == slow).float().mean() > 0.98


def test_bfloat16_autocast_training_learns_on_cuda(tmp_path):
    model = _tiny(attention="auto", grid_positions=False)
    g = torch.Generator().manual_seed(2)
    # a fixed small corpus of sequences with a learnable rule: each target token repeats the
    # prefix token 32 places earlier
    prefix = torch.randint(1, 300, (64, 32), generator=g)
    corpus = torch.cat([prefix, prefix], dim=1)

    def make_batch(step: int) -> dict[str, torch.Tensor]:
        rows = torch.randint(0, 64, (16,), generator=torch.Generator().manual_seed(step))
        return {"tokens": corpus[rows]}

    def loss_fn(net, batch):
        loss = net.loss(batch["tokens"], 32)
        return {"loss": loss}

    with torch.no_grad():
        before = float(model.cuda().loss(corpus.cuda(), 32))
    config = TrainConfig(
        steps=150, lr=3e-3, warmup_steps=10, out_dir=str(tmp_path / "run"), device="cuda",
        dtype="bfloat16", progress=False, checkpoint_every=0, log_every=50,
    )  # fmt: skip
    result = train(model, loss_fn, make_batch, config)
    assert result["step"] == 150
    with torch.no_grad():
        after = float(model.loss(corpus.cuda(), 32))
    assert next(model.parameters()).dtype == torch.float32  # autocast, master weights stay
    assert after < before / 4, (before, after)


def test_audio_tokenizer_on_cuda_matches_the_cpu():
    from videopoet.plugins.encodec_audio.model import build_tokenizer

    torch.manual_seed(0)
    config = {"n_filters": 4, "dimension": 16, "lstm": 0}
    cpu = build_tokenizer(**config).eval()
    gpu = build_tokenizer(**config)
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.cuda().eval()
    wav = torch.randn(2, 1, 16_000, generator=torch.Generator().manual_seed(4)) * 0.1
    with torch.no_grad():
        ids = gpu.encode(wav.cuda())
        assert ids.device.type == "cuda"
        assert (ids.cpu() == cpu.encode(wav)).float().mean() > 0.9
        assert gpu.decode(ids).shape == cpu.decode(ids.cpu()).shape


def test_tokenize_on_cuda_writes_the_cpus_shards(tiny_bundle, tmp_path):
    """The tokenizers encode on the GPU (``device: cuda``); the ids agree with the CPU's up to
    float rounding at a code boundary, the text embeddings exactly (the encoder stays on the
    CPU)."""
    import numpy as np

    from videopoet.core.lm_training import TokenizeConfig, WorldData, tokenize
    from videopoet.data.shards import TokenShards

    data = WorldData(examples_per_task=4, eval_examples_per_task=1)
    for device in ("cpu", "cuda"):
        config = TokenizeConfig(
            bundle=str(tiny_bundle), out=str(tmp_path / device), tasks=["t2v", "a2v"],
            world=data, device=device,
        )  # fmt: skip
        tokenize(config, progress=False)
    cpu, gpu = TokenShards(tmp_path / "cpu"), TokenShards(tmp_path / "cuda")
    for a, b in zip(cpu.of("train"), gpu.of("train"), strict=True):
        assert a.key == b.key
        tokens_a, tokens_b = cpu.arrays(a)["tokens"], gpu.arrays(b)["tokens"]
        assert (tokens_a == tokens_b).mean() > 0.95
        if a.text_slots:
            assert np.array_equal(cpu.arrays(a)["text"], gpu.arrays(b)["text"])


def test_lm_training_and_generation_end_to_end_on_cuda(tiny_bundle, tmp_path):
    """videopoet tokenize, then videopoet train on the GPU in bfloat16 (held-out evaluation
    included), then the trained bundle generates on the GPU."""
    from videopoet.core.engine import Engine
    from videopoet.core.lm_training import TokenizeConfig, WorldData, tokenize, train_lm

    shards = tmp_path / "shards"
    data = WorldData(examples_per_task=6, eval_examples_per_task=2)
    tokenize(
        TokenizeConfig(bundle=str(tiny_bundle), out=str(shards), tasks=["t2v", "fp"], world=data),
        progress=False,
    )
    settings = {"steps": 30, "batch_size": 3, "lr": 3e-3, "eval_every": 15, "progress": False}
    settings |= {"out_dir": str(tmp_path / "run"), "device": "cuda", "dtype": "bfloat16"}
    result = train_lm({"bundle": str(tiny_bundle), "shards": str(shards), "train": settings})
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if "loss" in x]
    assert losses[-1] < losses[0] - 0.5
    assert "loss/t2v" in result["eval"] and "loss/fp" in result["eval"]
    engine = Engine.from_pretrained(result["bundle"], device="cuda")
    out = engine.generate("t2v", text="a red square moves left on a dark blue background", seed=0)
    assert out.video.shape == (1, 3, 17, 64, 64)
    assert torch.isfinite(out.video).all()
