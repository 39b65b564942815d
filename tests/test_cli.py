import json
import shutil
import subprocess

import pytest

from videopoet import cli


def run(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_layout_json_fields(capsys):
    code, out, _ = run(capsys, "layout", "t2v", "--json")
    data = json.loads(out)
    assert code == 0
    assert {"task", "spans", "prefix_length", "total_length"} <= set(data)
    spans = {s["name"]: s for s in data["spans"]}
    assert spans["visual_out"]["length"] == 1280 and spans["text"]["length"] == 64
    assert data["prefix_length"] == 68 and data["total_length"] == 1351
    assert all({"name", "start", "length"} <= set(s) for s in data["spans"])


def test_layout_options(capsys):
    _, out, _ = run(capsys, "layout", "v2a", "--json", "--audio-seconds", "2.125")
    assert {s["name"]: s["length"] for s in json.loads(out)["spans"]}["audio_out"] == 424
    _, out, _ = run(capsys, "layout", "t2v", "--json", "--height", "224", "--text-tokens", "10")
    spans = {s["name"]: s["length"] for s in json.loads(out)["spans"]}
    assert spans["visual_out"] == 2240 and spans["text"] == 10 and "res" in spans
    _, out, _ = run(capsys, "layout", "t2v", "--frames", "9", "--any-format", "--json")
    assert {s["name"]: s["length"] for s in json.loads(out)["spans"]}["visual_out"] == 768


def test_layout_table_is_readable(capsys):
    code, out, _ = run(capsys, "layout", "t2v")
    assert code == 0
    assert "visual_out" in out and "1280" in out and "5x16x16" in out
    assert "prefix_length 68" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["layout", "t2v", "--frames", "15"], "frames=15: expected 1 + 4k frames"),
        (["layout", "t2v", "--height", "100"], "height=100: expected a positive multiple of 8"),
        (["layout", "t2v", "--text-tokens", "65"], "text_tokens=65"),
        (["layout", "nope"], "unknown task 'nope'"),
        (["layout", "t2v", "--frames", "21"], "not supported by task t2v"),
        (["layout", "t2v", "--frames", "0"], "frames"),
    ],
)
def test_bad_input_is_one_clear_line(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_tasks_and_plugins(capsys):
    _, out, _ = run(capsys, "tasks", "--json")
    tasks = {t["name"]: t for t in json.loads(out)}
    assert tasks["t2i"]["eos"] is False and tasks["t2v"]["token"] == "<task_video>"
    _, out, _ = run(capsys, "plugins", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["tasks"]["hooks"] == ["register_tasks"]
    assert rows["tasks"]["version"]


def test_demo_without_a_bundle_says_how_to_get_one(capsys, tmp_path):
    # the demo itself runs in tests/test_demo.py
    code, _, err = run(capsys, "demo", "--bundle", str(tmp_path / "none"), "--out", str(tmp_path))
    assert code == 2 and "videopoet init" in err


def test_console_script_is_installed():
    script = shutil.which("videopoet")
    assert script, "the videopoet console script is not on PATH: pip install -e ."
    result = subprocess.run(
        [script, "layout", "t2i", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout)["total_length"] == 2 + 66 + 258
