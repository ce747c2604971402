"""Headless Chromium, two ways: one command-line run that renders a page or screenshots it (`render_page`,
`screenshot`: pages that need no clicks, like the MLflow UI's), and a Chrome DevTools Protocol `Page` for
pages a user acts on (`headless_page`: open, evaluate, choose a file, click, screenshot), without a
browser-automation package: the machine has Chromium, and `websockets` is already a dependency.

    with headless_page() as page:
        page.open("http://127.0.0.1:8765/")
        page.wait_for("document.querySelector('.turn')", 30)
        page.screenshot(Path("docs/screenshots/page.png"))
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from websockets.sync.client import connect

from components.local_ports import free_port

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]  # fmt: skip


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise FileNotFoundError("no chromium on PATH: apt-get install chromium (make system-deps does it)")


def _run_chromium(args: list[str], budget_ms: int) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def render_page(url: str, budget_ms: int = 15000) -> str:
    """The page's DOM after its scripts ran (the MLflow UI is a single-page app)."""
    return _run_chromium(["--dump-dom", url], budget_ms).stdout


def screenshot(url: str, out: Path, size: str = "1400,900", budget_ms: int = 15000) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    _run_chromium([f"--screenshot={out}", f"--window-size={size}", url], budget_ms)
    if not out.is_file():
        raise RuntimeError(f"chromium wrote no screenshot for {url}")
    return out


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
        # absolute: a relative path is read from the browser's own working directory, and fails there
        self.call("DOM.setFileInputFiles", files=[str(Path(path).resolve())], nodeId=node)

    def screenshot(self, out: Path) -> Path:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return out


@contextlib.contextmanager
def headless_page(size: str = "900,700", flags: tuple[str, ...] = ()) -> Iterator[Page]:
    """`flags`: more Chromium switches (e.g. fake media devices for a page that captures)."""
    port = free_port()  # the DevTools endpoint's
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
        finally:  # the browser and its helper processes (its own process group; gone if it crashed)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
