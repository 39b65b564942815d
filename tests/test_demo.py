"""`videopoet demo` (videopoet/demo/): the gallery end to end on an untrained tiny bundle.

The quick demo runs through the command line and every medium it writes must decode; the
cases outside the quick set run once each without the untrained reference; the pictures,
the gallery's HTML and the folder rules are checked on their own. One slow test runs the
quick demo (and super-resolution) on the committed trained bundle, the command's default.
"""

from __future__ import annotations

import json
import re
import types
from pathlib import Path

import av
import pytest
import torch

from videopoet.cli import main
from videopoet.data import world
from videopoet.demo import cases, gallery, runner, views


def _demo(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["demo", "--quiet", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _sources(index: Path) -> list[str]:
    return re.findall(r'src="([^"]+)"', index.read_text())


def _check_decodes(path: Path, sound: bool | None = None) -> None:
    """The file opens with PyAV and yields frames (video) or samples (audio)."""
    if path.suffix in (".mp4", ".png"):
        with av.open(str(path)) as container:
            assert sum(1 for _ in container.decode(video=0)) >= 1, path
    if path.suffix == ".wav" or sound:
        with av.open(str(path)) as container:
            assert sum(f.samples for f in container.decode(audio=0)) > 0, path


def _check_media(folder: Path, report: dict) -> None:
    """Every medium the gallery in ``folder`` shows is a relative path that decodes (with
    sound where demo.json says so), of every kind, and nothing else was written."""
    sources = _sources(folder / "index.html")
    assert sources and all(s.startswith("media/") for s in sources)  # relative paths only
    kinds = {Path(s).suffix for s in sources}
    assert kinds == {".mp4", ".png", ".wav"}
    records = {
        r["path"]: r
        for e in report["entries"]
        for r in e["inputs"] + e["outputs"] + e["reference_outputs"]
        if "path" in r
    }
    for source in sources:
        _check_decodes(folder / source, records.get(source, {}).get("sound"))
    on_disk = {f"media/{p.name}" for p in (folder / "media").iterdir()}
    assert on_disk == set(sources)  # nothing written that the page does not show


@pytest.fixture(scope="module")
def quick_gallery(tiny_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "gallery"
    code = main(["demo", "--quick", "--quiet", "--bundle", str(tiny_bundle), "--out", str(out)])
    assert code == 0
    return out


def test_quick_demo_writes_a_gallery_whose_media_all_decode(quick_gallery):
    index = quick_gallery / "index.html"
    report = json.loads((quick_gallery / "demo.json").read_text())
    assert [e["key"] for e in report["entries"]] == list(cases.QUICK)
    assert not [e["key"] for e in report["entries"] if e["skipped"]]
    _check_media(quick_gallery, report)
    # every figure has the bundle's value and the untrained reference's beside it
    figures = [f for e in report["entries"] for f in e["figures"]]
    assert figures and all(f["samples"] == 1 for f in figures)
    assert all("reference" in f for f in figures)
    assert any(e["filmstrip"] for e in report["entries"])
    page = index.read_text()
    assert "untrained LM" in page and "Progressive preview" in page
    assert report["notes"] and "itself untrained" in page  # the tiny bundle is untrained


def test_quick_demo_sound_is_muxed_where_the_gallery_says(quick_gallery):
    report = json.loads((quick_gallery / "demo.json").read_text())
    v2a = next(e for e in report["entries"] if e["key"] == "v2a")
    output = v2a["outputs"][0]
    assert output["sound"] is True
    with av.open(str(quick_gallery / output["path"])) as container:
        assert container.streams.video and container.streams.audio


@pytest.mark.slow  # about 2 min with 2 threads (super-resolution alone about 50 s)
def test_quick_demo_on_the_committed_trained_bundle(tmp_path, monkeypatch, capsys):
    """`videopoet demo --quick` with its default bundle (the committed trained one), plus
    super-resolution: the gallery is whole, every medium decodes, every generation samples
    with the bundle's defaults (its tuned a2v, t2v, v2a settings included) and super-resolution
    uses the bundle's refiner. The figures (one sample each) are not compared: noise."""
    from videopoet.cli_demo import DEFAULT_BUNDLE
    from videopoet.core.engine import Engine
    from videopoet.core.generation_config import parse_generation

    config = json.loads((DEFAULT_BUNDLE / "bundle.json").read_text())
    defaults = parse_generation(config["generation"])
    generate, refine = Engine.generate, Engine.refine
    sampled: list[tuple[str, dict]] = []
    refined: list[str] = []

    def recording_generate(self, task, **options):
        result = generate(self, task, **options)
        sampled.append((task, result.sampling))
        return result

    def recording_refine(self, name, *args, **options):
        refined.append(name)
        return refine(self, name, *args, **options)

    monkeypatch.setattr(Engine, "generate", recording_generate)
    monkeypatch.setattr(Engine, "refine", recording_refine)
    monkeypatch.chdir(DEFAULT_BUNDLE.parents[1])  # the repository: the header's path is relative
    out = tmp_path / "gallery"
    keys = [*cases.QUICK, "superres"]
    code, stdout, err = _demo(capsys, "--quick", "--cases", ",".join(keys), "--out", str(out))
    assert code == 0, err
    report = json.loads((out / "demo.json").read_text())
    assert [e["key"] for e in report["entries"]] == keys
    assert not [e["key"] for e in report["entries"] if e["skipped"]]
    assert Path(report["bundle"]).resolve() == DEFAULT_BUNDLE.resolve()
    assert report["notes"] == []  # trained: not its own untrained twin
    _check_media(out, report)
    figures = [f for e in report["entries"] for f in e["figures"]]
    assert figures and all(f["samples"] == 1 and "reference" in f for f in figures)

    # the bundle's sampling defaults, for the bundle and its untrained twin alike
    assert report["generation"] == config["generation"]
    tuned = set(config["generation"]["tasks"])
    assert tuned <= {task for task, _ in sampled}
    for task, used in sampled:
        expected = defaults.for_task(task)
        for key in ("temperature", "top_k", "top_p"):
            assert used[key] == expected[key], (task, key, used)
        assert used["cfg_scale"] in (expected["cfg_scale"], 1.0), (task, used)
        if task in tuned:  # all three have a condition to drop: their guidance is the bundle's
            assert used == expected, (task, used)
    a2v = [used for task, used in sampled if task == "a2v"]
    assert len(a2v) == 2 and all(u["cfg_scale"] == 4.0 and u["temperature"] == 0.6 for u in a2v)

    # super-resolution with the bundle's refiner, to twice the size
    assert refined and set(refined) == set(config["refiners"]) == {"superres"}
    superres = next(e for e in report["entries"] if e["key"] == "superres")
    assert superres["outputs"][0]["label"] == "refined by superres"
    assert superres["outputs"][0]["width"] == 2 * superres["inputs"][0]["width"] == 128
    assert superres["figures"][0]["measured"] == 1

    page = (out / "index.html").read_text()
    assert "Bundle <code>checkpoints/videopoet_tiny_world</code>" in page
    assert str(DEFAULT_BUNDLE.resolve()) not in page
    assert "the bundle&#x27;s defaults (" in page and "itself untrained" not in page
    assert f"gallery: {out.resolve()}" in stdout


def test_every_other_case_runs_once(tiny_bundle, tmp_path, capsys):
    others = [c.key for c in cases.built_in_cases() if c.key not in cases.QUICK]
    out = tmp_path / "rest"
    args = ["--bundle", str(tiny_bundle), "--out", str(out), "--no-untrained", "--samples", "1"]
    code, stdout, err = _demo(capsys, *args, "--cases", ",".join(others))
    assert code == 0, err
    report = json.loads((out / "demo.json").read_text())
    skipped = {e["key"]: e["skipped"] for e in report["entries"] if e["skipped"]}
    assert set(skipped) == {"superres"} and "no super-resolution stage" in skipped["superres"]
    assert "not shown: superres" in stdout and f"gallery: {out.resolve()}" in stdout
    long = next(e for e in report["entries"] if e["key"] == "long")
    assert long["outputs"][0]["frames"] == 17 + cases.LongVideo.times * 12
    for source in _sources(out / "index.html"):
        _check_decodes(out / source)


def test_a_rerun_replaces_the_gallery_and_other_folders_are_refused(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "g"
    base = ["--bundle", str(tiny_bundle), "--out", str(out), "--samples", "1"]
    assert _demo(capsys, *base, "--cases", "t2i")[0] == 0
    assert _demo(capsys, *base, "--cases", "uncond_image", "--seed", "3")[0] == 0
    names = sorted(p.name for p in (out / "media").iterdir())
    assert names == ["uncond_image_out0.png", "uncond_image_ref0.png"]
    assert json.loads((out / "demo.json").read_text())["seed"] == 3

    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    code, _, err = _demo(capsys, "--bundle", str(tiny_bundle), "--out", str(other))
    assert code == 2 and "out=" in err and "other files" in err
    assert (other / "notes.txt").read_text() == "keep me"


def test_a_missing_bundle_says_how_to_get_one(tmp_path, capsys):
    code, _, err = _demo(capsys, "--bundle", str(tmp_path / "nowhere"), "--out", str(tmp_path))
    assert code == 2
    assert "bundle=" in err and "videopoet init" in err

    from videopoet.cli_demo import DEFAULT_BUNDLE, missing_bundle

    assert "videopoet demo --train" in str(missing_bundle(DEFAULT_BUNDLE))


def test_unknown_case_and_bad_samples(tiny_bundle, tmp_path, capsys):
    base = ["--bundle", str(tiny_bundle), "--out", str(tmp_path / "x")]
    code, _, err = _demo(capsys, *base, "--cases", "t2v,t2x")
    assert code == 2 and "t2x" in err
    code, _, err = _demo(capsys, *base, "--samples", "0")
    assert code == 2 and "samples=0" in err


# ---------------------------------------------------------------------------- pieces


def test_filmstrip_rows_grow_by_latent_frame():
    clip = torch.rand(3, 17, 8, 8) * 2 - 1
    snapshots = [clip[:, :t] for t in (1, 5, 9, 13, 17)]
    strip = views.filmstrip(snapshots, 17)
    assert strip.shape == (3, 5 * 10 + 2, 17 * 10 + 2)
    # row 0 holds frame 0 only: the cell of frame 1 is the empty grey
    assert torch.equal(strip[:, 2:10, 12:20], torch.full((3, 8, 8), views.EMPTY))
    assert torch.equal(strip[:, 42:50, 2 + 16 * 10 : 10 + 16 * 10], clip[:, 16])


def test_recolor_is_exact_on_the_world():
    item = world.sample(world.EVAL_OFFSET + 3, 5, 32, 32)
    new = "blue" if item.color != "blue" else "red"
    there = views.recolor(item.video, item.masks, world.COLORS[item.color], world.COLORS[new])
    back = views.recolor(there, item.masks, world.COLORS[new], world.COLORS[item.color])
    assert torch.allclose(back, item.video, atol=1e-5)
    from videopoet.data import analyser

    assert analyser.analyse_video(there).color == new


def test_superres_case_measures_against_bicubic():
    item = world.sample(world.EVAL_OFFSET, 5, 16, 16)
    ctx = cases.Context(fmt=None, image_fmt=None, world=world.WorldConfig())

    def refine(name, video, text=None, seed=None):  # a stand-in refiner: nearest, 2x
        return torch.nn.functional.interpolate(video, scale_factor=(1, 2, 2), mode="nearest")

    engine = types.SimpleNamespace(  # identity tokenizer: the reference is plain bicubic
        refiners={"nearest": types.SimpleNamespace(scale=2)},
        refine=refine,
        visual_spec=types.SimpleNamespace(latent_shape=lambda t, h, w: (t, h, w)),
        encode_video=lambda clip: clip,
        decode_video=lambda ids, shape: ids[None],
    )
    case = cases.SuperResolution()
    assert case.unavailable(engine) is None
    assert "no super-resolution" in case.unavailable(types.SimpleNamespace(refiners={}))
    ours = case.run(engine, item, 0, ctx, None)
    theirs = case.run_reference(None, item, 0, ctx)
    assert ours.outputs[0].video.shape == theirs.outputs[0].video.shape == (3, 5, 32, 32)
    assert [m.video.shape[2] for m in ours.inputs[:2]] == [16, 32]  # the input, the truth
    assert 10 < ours.values["psnr"] < theirs.values["psnr"] < 60  # bicubic beats nearest


def test_gallery_escapes_text_and_marks_who_is_ahead():
    entry = runner.Entry("t2v", "Text-to-video", "about <b>", ["t2v"], "untrained LM")
    entry.inputs = [{"kind": "text", "label": "prompt", "text": "<script>alert(1)</script>"}]
    entry.outputs = [
        {"kind": "image", "label": "out", "path": "media/a.png", "width": 64, "height": 64}
    ]
    entry.figures = [
        {
            "key": "t2v_x",
            "label": "x",
            "better": "lower",
            "bundle": 1.0,
            "reference": 2.0,
            "measured": 1,
            "samples": 1,
        },
    ]
    report = runner.DemoReport(Path("g"), "b", "", 1000, ["17x64x64"], 0, True, 1, {}, [entry])
    page = gallery.render(report)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert 'width="192"' in page and "bundle ahead" in page
    assert gallery.ahead(entry.figures[0]) is True
