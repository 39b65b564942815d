"""The demo gallery in a real browser: headless Chromium opens index.html from disk, every
<video> and <audio> loads (readyState >= 2) and plays (time advances), every <img> decodes
(naturalWidth > 0); a screenshot is kept as an artifact.

Needs a Chromium binary (Debian: ``apt-get install -y chromium``); skipped where there is
none. The screenshot is kept at ``test-artifacts/demo-gallery.png`` in the repository
(git-ignored; a run overwrites it), or in ``$VIDEOPOET_ARTIFACTS`` when that is set.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from videopoet.cli import main
from videopoet.demo.browser import check_gallery, find_chromium

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="no Chromium binary: install it with `apt-get install -y chromium` (Debian)",
)

#: where the screenshot is kept: ``$VIDEOPOET_ARTIFACTS`` when set, else this (git-ignored)
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

#: a small gallery with every kind of medium: silent clips, clips with sound, images, a
#: sound alone, a preview filmstrip
CASES = "t2v,t2i,a2v,v2a"


@pytest.fixture(scope="module")
def gallery(tiny_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("browser") / "gallery"
    args = ["--bundle", str(tiny_bundle), "--out", str(out), "--samples", "1", "--quiet"]
    assert main(["demo", *args, "--cases", CASES]) == 0
    return out


def artifacts() -> Path:
    """The folder the screenshot is kept in (made if missing)."""
    folder = Path(os.environ.get("VIDEOPOET_ARTIFACTS") or ARTIFACTS)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_every_medium_loads_and_plays_in_chromium(gallery, tmp_path):
    page = (gallery / "index.html").read_text()
    shot = tmp_path / "demo-gallery.png"
    check = check_gallery(gallery / "index.html", screenshot=shot)
    if shot.is_file():  # kept before the checks, so a failing run leaves its picture too
        shutil.copy(shot, artifacts() / shot.name)
    assert check.ok, check.problems
    players = re.findall(r"<(video|audio)\b", page)
    assert len(check.media) == len(players) >= 8
    assert {m["tag"] for m in check.media} == {"video", "audio"}
    assert all(m["readyState"] >= 2 and m["advanced"] > 0 for m in check.media)
    assert len(check.images) == len(re.findall(r"<img\b", page)) >= 3
    assert all(img["naturalWidth"] > 0 for img in check.images)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (artifacts() / shot.name).read_bytes() == shot.read_bytes()


def test_a_broken_medium_is_reported(gallery, tmp_path):
    broken = tmp_path / "gallery"
    shutil.copytree(gallery, broken)
    video = next((broken / "media").glob("*.mp4"))
    video.write_bytes(video.read_bytes()[:200])  # truncated: no playable video left
    image = next((broken / "media").glob("*.png"))
    image.write_bytes(b"not a png")
    check = check_gallery(broken / "index.html", play_seconds=0.5)
    assert not check.ok
    named = " ".join(check.problems)
    assert video.name in named and image.name in named
