"""`ingest_multimodal` with its probe and shard steps on a Ray cluster: a Ray head started here (1 CPU, its
own temp dir and auth token), the DAG pointed at it by the `omnistage_ray` Airflow connection (from the
environment, resolved when the tasks run), run with `airflow dags test` on a real DVC repository.

Skipped until `omnistage ingest` has `--executor` (the Ray executor, another branch of issue 14)."""

import json
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import typer.main

from components.cli import app
from tests.conftest import REPO_ROOT, VENV_BIN, copy_migrated_db
from tests.dags.conftest import AIRFLOW


def _ingest_has_executor() -> bool:
    ingest = typer.main.get_command(app).commands["ingest"]
    return any("--executor" in param.opts for param in ingest.params)


pytestmark = pytest.mark.skipif(
    not _ingest_has_executor(),
    reason="`omnistage ingest` has no --executor yet (the Ray executor branch is not merged)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def ray_head():
    """A Ray head on this machine; yields (address, env for its clients, its temp dir). Stopped by its process
    group (never `ray stop`, which would stop every Ray on the machine)."""
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # Ray's socket paths must stay short
    # Token auth as Ray 2.60 enables by default, with a token of our own (not the shared ~/.ray/auth_token).
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))
    head = subprocess.Popen([str(VENV_BIN / "ray"), "start", "--head", "--port", str(port), "--num-cpus", "1",
                             "--node-ip-address", "127.0.0.1", "--include-dashboard=false", "--disable-usage-stats",
                             "--temp-dir", temp_dir, "--block"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not any(p.startswith("session_") for p in os.listdir(temp_dir)) or not _listening(port):
            assert head.poll() is None and time.monotonic() < deadline, "the Ray head did not start"
            time.sleep(1)
        yield f"127.0.0.1:{port}", env, temp_dir
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        os.killpg(head.pid, signal.SIGKILL)  # what still drains after 10 s
        head.wait()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_probe_and_shard_steps_run_on_the_ray_cluster_named_by_the_connection(data_repo, ray_head, airflow_env,
                                                                            migrated_airflow_db):  # fmt: skip  # noqa: F811
    repo, _, spec_path = data_repo
    address, ray_env, temp_dir = ray_head
    host, port = address.split(":")
    connection = json.dumps({"conn_type": "generic", "host": host, "port": int(port)})
    env = dict(airflow_env, AIRFLOW_CONN_OMNISTAGE_RAY=connection,
               **{k: ray_env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")})  # fmt: skip
    copy_migrated_db(migrated_airflow_db, Path(env["AIRFLOW_HOME"]) / "airflow.db")
    conf = {"spec": str(spec_path.relative_to(repo)), "out": "datasets/tiny", "repo": str(repo), "workers": 1}
    run = subprocess.run([str(AIRFLOW), "dags", "test", "ingest_multimodal", "-c", json.dumps(conf)], env=env,
                         capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode == 0 and "--executor ray --ray-address " + address in output, output[-4000:]
    stats = json.loads((repo / "datasets" / "tiny" / "stats.json").read_text())
    assert stats["version"]["version"].endswith(".dir") and sorted(
        (repo / "datasets" / "tiny" / "shards").glob("*.tar")
    )
    # Each ingestion step connected to this cluster as a driver: probe and shard.
    logs = os.path.join(temp_dir, "session_latest", "logs")
    assert len([f for f in os.listdir(logs) if f.startswith("python-core-driver-")]) >= 2
