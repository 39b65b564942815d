"""Check a gallery in headless Chromium: every video and sound loads and plays, every image
decodes; and take a screenshot.

Chromium is driven over its DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON
messages separated by NUL bytes on file descriptors 3 and 4), so nothing beyond the standard
library and a system Chromium (Debian: ``apt-get install chromium``) is needed.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videopoet.core.errors import VideoPoetError

#: binaries tried in order (``CHROMIUM`` in the environment goes first)
BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

#: for the screenshot: every clip paused at its middle frame, without its controls
STILL_SCRIPT = """
(async () => {
  const players = [...document.querySelectorAll('video, audio')];
  await Promise.all(players.map(el => new Promise(done => {
    el.pause();
    if (el.tagName === 'VIDEO') el.controls = false;
    if (!(el.duration > 0)) return done();
    el.addEventListener('seeked', done, {once: true});
    el.currentTime = el.duration / 2;
    setTimeout(done, 2000);
  })));
  window.scrollTo(0, 0);
  return players.length;
})()
"""

#: runs in the page: waits for each medium, plays it for a while, reports what it saw
CHECK_SCRIPT = """
(async (playSeconds, loadSeconds) => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const name = el => el.getAttribute('src');
  const waitReady = async el => {
    const end = performance.now() + loadSeconds * 1000;
    while (el.readyState < 2 && !el.error && performance.now() < end) await sleep(50);
  };
  const players = [...document.querySelectorAll('video, audio')];
  const media = [];
  for (const el of players) {
    el.muted = true;
    el.load();
  }
  for (const el of players) {
    await waitReady(el);
    const start = el.currentTime;
    let played = null;
    try { await el.play(); played = true; } catch (e) { played = String(e); }
    media.push({src: name(el), tag: el.tagName.toLowerCase(), readyState: el.readyState,
                error: el.error ? el.error.message || String(el.error.code) : null,
                duration: el.duration, start, played, el});
  }
  await sleep(playSeconds * 1000);
  for (const m of media) {  // seconds played (loops included), from the played ranges
    const ranges = m.el.played;
    m.advanced = 0;
    for (let i = 0; i < ranges.length; i++) m.advanced += ranges.end(i) - ranges.start(i);
    delete m.el;
  }
  const images = [...document.images].map(img => ({src: name(img), complete: img.complete,
                                                   naturalWidth: img.naturalWidth}));
  window.scrollTo(0, 0);
  return {media, images};
})
"""


class BrowserError(VideoPoetError):
    """Chromium could not be started or did not answer."""


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) binary, or None."""
    for name in (os.environ.get("CHROMIUM"), *BINARIES):
        if name and (path := shutil.which(name)):
            return path
    return None


@dataclass
class GalleryCheck:
    """What the browser saw: one record per <video>/<audio> and per <img>."""

    media: list[dict[str, Any]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        out = []
        for m in self.media:
            if m["error"] or m["readyState"] < 2:
                out.append(f"{m['tag']} {m['src']}: readyState {m['readyState']}, {m['error']}")
            elif m["played"] is not True or not m["advanced"] > 0:
                out.append(f"{m['tag']} {m['src']}: did not play ({m['played']})")
        for img in self.images:
            if not img["complete"] or img["naturalWidth"] <= 0:
                out.append(f"img {img['src']}: not decoded")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        state = "all load and play" if self.ok else f"{len(self.problems)} problems"
        return f"{len(self.media)} players, {len(self.images)} images: {state}"


class Chromium:
    """A headless Chromium driven over the DevTools protocol on a pipe."""

    def __init__(self, binary: str | None = None, width: int = 1280, height: int = 900) -> None:
        binary = binary or find_chromium()
        if binary is None:
            raise BrowserError("no Chromium binary found (install Debian's `chromium` package)")
        self.profile = tempfile.mkdtemp(prefix="videopoet-chromium-")
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()

        def wire() -> None:  # in the child: its fd 3 reads our commands, fd 4 writes replies
            read, write = os.dup(commands_read), os.dup(replies_write)
            os.dup2(read, 3)
            os.dup2(write, 4)

        args = [
            binary,
            "--headless",
            "--remote-debugging-pipe",
            "--no-sandbox",  # root in containers; the page is our own local file
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--mute-audio",
            "--autoplay-policy=no-user-gesture-required",
            "--allow-file-access-from-files",
            f"--user-data-dir={self.profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        self.process = subprocess.Popen(
            args,
            preexec_fn=wire,  # noqa: PLW1509 - no threads in the caller's child setup
            close_fds=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_read)
        os.close(replies_write)
        self._buffer = b""
        self._next = 0
        self.events: list[dict] = []
        self.size = (width, height)

    def send(
        self,
        method: str,
        params: dict | None = None,
        session: str | None = None,
        timeout: float = 60.0,
    ) -> dict:
        """Send one command and return its result (an error reply raises BrowserError)."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        reply = self.wait(lambda m: m.get("id") == self._next, timeout)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def wait(self, match: Any, timeout: float = 60.0) -> dict:
        """The next message ``match`` accepts (events before it are kept in ``events``)."""
        end = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if match(message):
                    return message
                if "method" in message:
                    self.events.append(message)
            left = end - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                raise BrowserError("Chromium did not answer in time (or exited)")
            ready, _, _ = select.select([self._replies], [], [], left)
            if ready:
                chunk = os.read(self._replies, 1 << 20)
                if not chunk:
                    raise BrowserError("Chromium closed its DevTools pipe")
                self._buffer += chunk

    def open(self, url: str, timeout: float = 60.0) -> str:
        """A new page showing ``url``, loaded; returns its session id."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        session = session["sessionId"]
        width, height = self.size
        self.send("Page.enable", session=session)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait(
            lambda m: m.get("method") == "Page.loadEventFired" and m.get("sessionId") == session,
            timeout,
        )
        return session

    def evaluate(self, session: str, expression: str, timeout: float = 120.0) -> Any:
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session=session,
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, session: str, path: str | Path, full_page: bool = False) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = self.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": metrics["width"],
                "height": metrics["height"],
                "scale": 1,
            }
            params["captureBeyondViewport"] = True
        data = self.send("Page.captureScreenshot", params, session=session)["data"]
        from videopoet.core.serialization import atomic_write

        atomic_write(path, base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                try:
                    self.send("Browser.close", timeout=10)
                except BrowserError:
                    pass
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(10)
        finally:
            for fd in (self._commands, self._replies):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_gallery(
    index: str | Path,
    screenshot: str | Path | None = None,
    *,
    full_page: bool = False,
    play_seconds: float = 1.5,
    binary: str | None = None,
) -> GalleryCheck:
    """Open ``index`` (a gallery's index.html) in headless Chromium, load and play every
    medium, and save a screenshot of the page's top (or the whole page) to ``screenshot``,
    with every clip still at its middle frame and the players' controls hidden."""
    url = Path(index).resolve().as_uri()
    with Chromium(binary) as browser:
        session = browser.open(url)
        seen = browser.evaluate(session, f"{CHECK_SCRIPT}({play_seconds}, 30)")
        if screenshot is not None:
            browser.evaluate(session, STILL_SCRIPT)
            browser.screenshot(session, screenshot, full_page=full_page)
    return GalleryCheck(seen["media"], seen["images"])
