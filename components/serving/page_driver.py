"""Drive the conversation page (`omnistage serve`'s `/`) in headless Chromium, as a user would: choose a
file, type a question, Replay, wait for the spoken answer. The page tests and `omnistage screenshots` call
it. A minimal Chrome DevTools Protocol client (open, evaluate, choose a file, screenshot), without a
browser-automation package: the machine has Chromium, and `websockets` is already a dependency."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from websockets.sync.client import connect

from components.serving.server import free_port
from components.tracking.mlflow_ui import CHROMIUM_FLAGS, chromium


class Page:
    def __init__(self, ws):
        self.ws, self._ids = ws, itertools.count(1)

    def call(self, method: str, **params) -> dict:
        number = next(self._ids)
        self.ws.send(json.dumps({"id": number, "method": method, "params": params}))
        while True:  # events arrive between replies
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == number:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, timeout_s: float = 30) -> None:
        self.call("Page.enable")
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", timeout_s)

    def wait_for(self, condition: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.evaluate(f"!!({condition})"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"page never showed {condition}; body: {self.evaluate('document.body.innerText')}")
            time.sleep(0.2)

    def choose_file(self, selector: str, path: Path) -> None:
        root = self.call("DOM.getDocument")["root"]["nodeId"]
        node = self.call("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.call("DOM.setFileInputFiles", files=[str(path)], nodeId=node)

    def screenshot(self, out: Path) -> Path:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return out


@contextlib.contextmanager
def headless_page(size: str = "900,700", flags: tuple[str, ...] = ()) -> Iterator[Page]:
    """`flags`: more Chromium switches (e.g. fake media devices for a page that captures)."""
    port = free_port()
    # chromium's helper processes may still write to the profile as it closes
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        cmd = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
               "--remote-debugging-address=127.0.0.1", f"--window-size={size}", *flags, "about:blank"]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2).read())
                    pages = [t for t in targets if t["type"] == "page"]
                    if pages:
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("headless chromium did not open its debugging port")
                time.sleep(0.2)
            with connect(pages[0]["webSocketDebuggerUrl"], max_size=None) as ws:
                yield Page(ws)
        finally:  # the browser and its helper processes (its own process group)
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def replay_on_page(page: Page, url: str, clip: Path, question: str | None = None, realtime: bool = False,
                   timeout_s: float = 120) -> dict:  # fmt: skip
    """Replay `clip` from the page at `url` and wait for the answer (or an error on the page); what the page
    then shows: `answer`, `log` (the conversation's text), `errors`, `speech_s` (the player's duration),
    `clip_shown` (the clip is on the page beside the answer)."""
    page.open(url + "/")
    page.wait_for("document.getElementById('model').textContent.includes('version')", 30)
    page.choose_file("#file", clip)
    page.evaluate(f"document.getElementById('question').value = {json.dumps(question or '')}")
    page.evaluate(f"document.getElementById('realtime').checked = {json.dumps(realtime)}")
    page.evaluate("document.getElementById('send').click()")
    page.wait_for("document.querySelector('.turn[data-done]') || document.querySelector('.error')", timeout_s)
    errors = page.evaluate("[...document.querySelectorAll('.error')].map((e) => e.textContent)")
    if not errors:  # the answer's speech and the clip are loaded (the player shows their length)
        page.wait_for("document.getElementById('player').readyState >= 1", 30)
        clip_loaded = "(c) => !c || c.readyState >= 2 || c.error"  # no clip shown: the caller's check says so
        page.wait_for(f"({clip_loaded})(document.querySelector('.clip'))", 30)
    return {
        "answer": page.evaluate("document.getElementById('answer')?.textContent ?? null"),
        "log": page.evaluate("document.getElementById('log').innerText"),
        "errors": errors,
        "speech_s": page.evaluate("document.getElementById('player').duration || 0"),
        "clip_shown": page.evaluate("!!document.querySelector('.clip')?.src.startsWith('blob:')"),
    }


def conversation_screenshot(model_uri: str, tracking_uri: str, clip: Path, question: str | None, out: Path,
                            clip_at_s: float = 0.0) -> dict:  # fmt: skip
    """The README's picture of a conversation: `model_uri` served on a free port, `clip` replayed from its
    page, the page as it then looks written to `out`, the clip shown at `clip_at_s` (the moment the question
    is about). What the page showed (replay_on_page) is returned."""
    from components.serving.served_model import load_served_model
    from components.serving.server import running_server

    served = load_served_model(model_uri, tracking_uri)
    with running_server(served) as url, headless_page(size="900,820") as page:
        shown = replay_on_page(page, url, clip, question)
        if shown["errors"]:
            raise RuntimeError(f"the page showed an error replaying {clip}: {shown['errors']}")
        page.evaluate(f"""new Promise((done) => {{ const c = document.querySelector('.clip');
            c.addEventListener('seeked', () => done(true), {{once: true}}); c.currentTime = {clip_at_s}; }})""")
        # headless Chromium draws its loading spinner over a paused blob video for good: the frame without it
        page.evaluate("document.querySelector('.clip').controls = false")
        page.screenshot(out)
    return shown
