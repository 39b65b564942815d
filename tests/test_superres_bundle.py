"""The super-resolution refiner in use: bundles, Engine.generate/refine, evaluate, the CLI."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest
import torch

from videopoet import cli
from videopoet.core.bundle import BUNDLE_NAME, REFINERS_DIR, read_bundle_config
from videopoet.core.engine import Engine
from videopoet.core.errors import ConfigError
from videopoet.plugins.superres.config import StageConfig
from videopoet.plugins.superres.refiner import SuperResolution, tokenizer_fingerprint

WINDOWS = {"vertical": (1, 16, 2), "horizontal": (1, 2, 16), "temporal": (5, 4, 4)}
#: the tiny config shrunk to a few seconds of work: a 16-wide, one-block stage, 6 clips
SMALL = [
    "stage.width=16",
    "stage.heads=2",
    "stage.blocks=1",
    "stage.steps=2",
    "data.clips=4",
    "data.eval_clips=2",
    "data.chunk=2",
    "eval.sample_clips=1",
    "train.batch_size=2",
    "train.eval_every=0",
    "train.checkpoint_every=1",
    "train.progress=false",
    "train.time_limit_s=null",
]


def _stage(engine: Engine) -> StageConfig:
    return StageConfig(
        grid=(5, 16, 16),
        windows=WINDOWS,
        codebook_bits=engine.visual_spec.codebook_bits,
        width=16,
        heads=2,
        blocks=1,
        text_dim=engine.text_encoder.dim,
        steps=3,
        tokenizer=engine.visual_spec.name,
        tokenizer_identity=tokenizer_fingerprint(engine.visual),
        text_encoder=engine.text_record,
    )


@pytest.fixture(scope="module")
def sr_bundle(tiny_bundle, tmp_path_factory, one_thread):
    """The tiny bundle with an untrained 2x stage, saved and loaded back."""
    engine = Engine.from_pretrained(tiny_bundle)
    torch.manual_seed(0)
    engine.refiners["superres"] = SuperResolution([_stage(engine)]).eval()
    path = tmp_path_factory.mktemp("sr") / "bundle"
    engine.save_pretrained(path, description="tiny + superres")
    return path, engine


def test_bundle_round_trip_with_a_superres_stage(sr_bundle):
    path, engine = sr_bundle
    assert read_bundle_config(path).refiners == ["superres"]
    assert (path / REFINERS_DIR / "superres" / "model.safetensors").is_file()
    loaded = Engine.from_pretrained(path)
    refiner = loaded.refiners["superres"]
    assert refiner.configs == engine.refiners["superres"].configs
    for key, value in engine.refiners["superres"].state_dict().items():
        assert torch.equal(value, refiner.state_dict()[key]), key


def test_a_bundle_written_before_refiners_still_loads(tiny_bundle, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(tiny_bundle, old)
    record = json.loads((old / BUNDLE_NAME).read_text())
    record.pop("refiners", None)
    (old / BUNDLE_NAME).write_text(json.dumps(record))
    assert Engine.from_pretrained(old).refiners == {}


def test_generate_with_superres_doubles_the_frame_size(sr_bundle):
    _, engine = sr_bundle
    result = engine.generate(
        "t2v", text="a red square moving left", seed=0, superres=True, superres_options={"steps": 2}
    )
    assert result.video.shape == (1, 3, 17, 128, 128)
    assert float(result.video.abs().max()) <= 1.0 and "superres_s" in result.timings
    with pytest.raises(ConfigError, match="superres"):
        engine.generate("v2a", video=torch.zeros(3, 17, 64, 64), superres=True)
    bare = Engine.from_pretrained(sr_bundle[0])
    bare.refiners.clear()
    with pytest.raises(ConfigError, match="add-refiner"):
        bare.generate("t2v", text="x", superres=True)


def test_refine_checks_the_tokenizer_and_options(sr_bundle):
    _, engine = sr_bundle
    video = torch.zeros(1, 3, 5, 32, 32)
    out = engine.refine("superres", video, text="a circle", seed=1, steps=2)
    assert out.shape == (1, 3, 5, 64, 64)
    with pytest.raises(TypeError, match="stepz"):  # its keywords are its signature's
        engine.refine("superres", video, stepz=2)
    with pytest.raises(ConfigError, match="stages"):
        engine.refine("superres", video, stages=2)
    refiner = engine.refiners["superres"]
    other = refiner.configs[0].model_copy(update={"tokenizer_identity": "0" * 40})
    stranger = SuperResolution([other])
    with pytest.raises(ConfigError, match="trained on"):
        stranger.refine(engine, video)


def test_evaluate_reports_superres_and_bicubic_psnr(sr_bundle):
    from videopoet.data.evaluation import SUPERRES_FIGURES, evaluate

    _, engine = sr_bundle
    result = evaluate(engine, seeds=1, tasks=["i2v"], untrained=False, progress=False)
    for key in SUPERRES_FIGURES:
        assert 0 < result.figures[key] <= 100, key
    assert any(row[1] == "superres_psnr" for row in result.table())
    without = evaluate(
        engine, seeds=1, tasks=["i2v"], untrained=False, progress=False, superres=False
    )
    assert not set(SUPERRES_FIGURES) & set(without.figures) and "superres" not in without.timings
    assert without.figures["i2v_first_frame_psnr"] == result.figures["i2v_first_frame_psnr"]


def _cli(*argv: str) -> tuple[int, str]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = cli.main(list(argv))
    return code, buffer.getvalue()


def test_train_refiner_resumes_and_add_refiner_fills_a_bundle(tiny_bundle, tmp_path, one_thread):
    out = tmp_path / "run"
    args = ["train-refiner", "configs/superres/tiny.yaml", f"train.out_dir={out}", *SMALL]
    code, text = _cli(*args, "train.steps=2")
    assert code == 0
    first = json.loads(text.strip().splitlines()[-1])
    assert first["step"] == 2 and first["resumed_from"] is None
    assert {"superres_psnr", "bicubic_psnr", "tokenizer_psnr"} <= set(first["eval"])
    code, text = _cli(*args, "train.steps=3")
    assert code == 0
    second = json.loads(text.strip().splitlines()[-1])
    assert second["step"] == 3 and second["resumed_from"] == 2
    code, text = _cli(
        "train-refiner",
        "--evaluate",
        "1",
        "--sampling",
        "temperature=0",
        *args[1:],
        "train.steps=3",
    )
    assert code == 0
    figures = json.loads(text.strip().splitlines()[-1])
    assert figures["clips"] == 1 and figures["sampling"]["temperature"] == 0
    assert figures["checkpoint"].endswith("step_00000003")
    bundle = tmp_path / "bundle"
    code, text = _cli("add-refiner", str(tiny_bundle), str(out / "refiner"), "--out", str(bundle))
    assert code == 0 and json.loads(text)["scale"] == 2
    engine = Engine.from_pretrained(bundle)
    assert engine.refiners["superres"].configs[0].tokenizer == "magvit2_tiny"


def test_generate_cli_refuses_superres_without_a_stage(tiny_bundle, capsys):
    code = cli.main(
        ["generate", "t2v", "--checkpoint", str(tiny_bundle), "--text", "x", "--superres"]
    )
    assert code == 2 and "superres" in capsys.readouterr().err


def test_a_cascade_of_two_stages_upscales_four_times(sr_bundle):
    _, engine = sr_bundle
    first = engine.refiners["superres"]
    second_config = {
        **first.configs[0].model_dump(),
        "grid": (5, 32, 32),
        "windows": {"vertical": (1, 32, 2), "horizontal": (1, 2, 32), "temporal": (5, 4, 4)},
    }
    second = SuperResolution([StageConfig(**second_config)])
    cascade = SuperResolution.cascade([first, second])
    assert cascade.scale == 4 and len(cascade.stages) == 2
    video = torch.zeros(1, 3, 5, 32, 32)
    assert cascade.refine(engine, video, steps=1).shape == (1, 3, 5, 128, 128)
    assert cascade.refine(engine, video, steps=1, stages=1).shape == (1, 3, 5, 64, 64)
