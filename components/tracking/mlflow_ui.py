"""The MLflow UI on 127.0.0.1 for a local store, and the README's screenshots of it (components.headless_chromium).

    with mlflow_ui("sqlite:///work/mlflow.db", Path("work/mlartifacts")) as url:
        html = render_page(f"{url}/#/models/omnistage-omni-tiny")           # the DOM after the app ran

Used by `make ui` (the server alone), the UI test and the README screenshots. The server is stopped when
the block ends, whatever happens inside it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from components.headless_chromium import headless_page, screenshot
from components.local_ports import free_port

log = logging.getLogger(__name__)


@contextmanager
def mlflow_ui(tracking_uri: str, artifact_root: Path, port: int | None = None, timeout_s: float = 90) -> Iterator[str]:
    """Start `mlflow server` bound to 127.0.0.1; yields its URL; stops it on exit."""
    port = port or free_port()
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    cmd = [mlflow_bin, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", tracking_uri, "--default-artifact-root", str(artifact_root)]  # fmt: skip
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"mlflow server did not come up on {url}: {log.read()[-2000:].decode()}")
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)  # the server's gunicorn/uvicorn workers are in its process group
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        log.close()


def readme_screenshots(tracking_uri: str, artifact_root: Path, model_name: str, dataset_dir: Path,
                       out: Path) -> list[Path]:  # fmt: skip
    """The README's pictures: the curriculum runs, the registered model with its aliases, a Great
    Expectations validation result and the dataset card's figures."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    curriculum = client.get_experiment_by_name("omnistage-curriculum")
    shots = []
    with mlflow_ui(tracking_uri, artifact_root) as url:
        if curriculum is not None:
            shots.append(_curriculum_runs(f"{url}/#/experiments/{curriculum.experiment_id}/runs", out))
        shots.append(screenshot(f"{url}/#/models/{model_name}", out / "mlflow-registry.png"))
    site = dataset_dir / "validation" / "gx" / "uncommitted" / "data_docs" / "local_site"
    # The newest validation result page: static HTML (the index is filled in by scripts from a CDN).
    results = sorted(site.glob("validations/**/*.html"), key=lambda p: p.stat().st_mtime)
    if results:
        shots.append(screenshot(results[-1].resolve().as_uri(), out / "gx-data-docs.png"))
    for picture in sorted([*(dataset_dir / "card").glob("*.png"), *(dataset_dir / "card").glob("*.jpg")]):
        target = out / f"dataset-card-{picture.name}"  # the card's own figures: histogram, contact sheet
        target.write_bytes(picture.read_bytes())
        shots.append(target)
    return shots


def _curriculum_runs(url: str, out: Path) -> Path:
    """The runs table with the newest curriculum run opened on its stages (a click the one-shot screenshot
    cannot make), the assistant panel closed; the one-shot picture if the table is not as expected."""
    rows = "document.querySelectorAll('.ag-center-cols-container .ag-row').length"  # pinned columns repeat rows
    try:
        with headless_page(size="1600,900") as page:
            page.open(url)
            page.wait_for(rows, 60)
            page.evaluate("document.querySelectorAll('button[aria-label=Close]').forEach((b) => b.click())")
            before = page.evaluate(rows)
            opened = page.evaluate("""(() => { const b = document.querySelector('.ag-row button');  // newest
                if (b) b.click(); return !!b; })()""")
            if opened:
                page.wait_for(f"{rows} > {before}", 30)
            time.sleep(1)  # the expanded rows' dataset links render after the rows
            return page.screenshot(out / "mlflow-runs.png")
    except (TimeoutError, RuntimeError) as exc:  # a newer MLflow UI: the table as it opens
        log.warning("runs table not opened on its curriculum run (%s): taking it as it opens", exc)
        return screenshot(url, out / "mlflow-runs.png", size="1600,900")
