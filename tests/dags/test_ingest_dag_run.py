"""`ingest_multimodal` end to end the way a user runs it: `make airflow`'s script (scheduler, triggerer,
dag-processor, api-server) on a non-default port with a SQLite home, the run triggered through the REST
API, its tasks executed by the LocalExecutor's task runners against the execution API of that port, on a
real DVC repository; its probe and shard steps on a Ray cluster: a Ray head started here (1 CPU, its own
temp dir and auth token), named by the `omnistage_ray` Airflow connection (from the environment, resolved
when the tasks run). One DAG run checks both (a full ingest DAG run is ~40 s)."""

import json
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, VENV_BIN
from tests.dags.conftest import AIRFLOW_PY

DAG = "ingest_multimodal"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


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


def _task_logs(home: Path, task_id: str) -> str:
    """Every log file the task runners wrote for `task_id` (all tries), concatenated."""
    files = sorted((home / "logs").glob(f"**/task_id={task_id}/**/*.log"))
    return "".join(f.read_text(errors="replace") for f in files)


def _api(port: int, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v2{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def _wait_for(what: str, check, timeout: float, server: subprocess.Popen, log_path) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"airflow.sh exited while waiting for {what}:\n{log_path.read_text()[-4000:]}"
        try:
            value = check()
            if value:
                return value
        except OSError:
            pass  # not listening yet
        time.sleep(3)
    pytest.fail(f"timed out waiting for {what}:\n{log_path.read_text()[-4000:]}")


@pytest.mark.slow
def test_ingest_dag_runs_green_under_make_airflow_with_its_steps_on_the_connections_ray(data_repo, ray_head,
                                                                                      tmp_path):  # fmt: skip
    if not AIRFLOW_PY.exists():
        pytest.skip(".venv-airflow is missing (make setup)")
    repo, spec, spec_path = data_repo
    address, ray_env, ray_temp = ray_head
    ray_host, ray_port = address.split(":")
    port = _free_port()
    assert port != 8080
    log_path, home = tmp_path / "airflow.log", tmp_path / "airflow"
    env = dict(os.environ, AIRFLOW_HOME=str(home), AIRFLOW_PORT=str(port), AF_VENV=str(AIRFLOW_PY.parents[1]),
               # no daily run on unpause: it would ingest the default spec and hold the manual run behind it
               OMNISTAGE_INGEST_SCHEDULE="none",
               AIRFLOW_CONN_OMNISTAGE_RAY=json.dumps({"conn_type": "generic", "host": ray_host, "port": int(ray_port)}),
               **{k: ray_env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")})  # fmt: skip
    with open(log_path, "w") as log:
        server = subprocess.Popen(["bash", str(REPO_ROOT / "infra/local/airflow.sh")], env=env, stdout=log,
                                  stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True)  # fmt: skip
    try:
        _wait_for("the DAG to be parsed", lambda: _api(port, "GET", f"/dags/{DAG}").get("dag_id"), 240, server,
                  log_path)  # fmt: skip
        _api(port, "PATCH", f"/dags/{DAG}", {"is_paused": False})
        conf = {"spec": str(spec_path.relative_to(repo)), "out": "datasets/tiny", "repo": str(repo), "workers": 2}
        run = _api(port, "POST", f"/dags/{DAG}/dagRuns", {"logical_date": None, "conf": conf})
        run_id = run["dag_run_id"]
        state = _wait_for("the run to finish",
                          lambda: (s := _api(port, "GET", f"/dags/{DAG}/dagRuns/{run_id}")["state"]) in
                          ("success", "failed") and s, 600, server, log_path)  # fmt: skip
        tasks = _api(port, "GET", f"/dags/{DAG}/dagRuns/{run_id}/taskInstances")["task_instances"]
        states = {t["task_id"]: t["state"] for t in tasks}
        assert state == "success", f"{states}\n{log_path.read_text()[-4000:]}"
        assert set(states) == {"discover", "probe_and_validate", "write_shards", "version", "publish"}
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the script's trap stops every Airflow part it started
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    stats = json.loads((repo / "datasets" / "tiny" / "stats.json").read_text())
    assert stats["version"]["version"].endswith(".dir")
    assert stats["accepted"] + stats["quarantined"] + stats["duplicates"] == stats["inputs"]
    assert sorted((repo / "datasets" / "tiny" / "shards").glob("*.tar"))
    # The probe and shard steps ran `omnistage ingest` on the connection's cluster, each as a driver of it.
    for task_id in ("probe_and_validate", "write_shards"):
        task_log = _task_logs(home, task_id)
        assert "--executor ray --ray-address " + address in task_log, f"{task_id}:\n{task_log[-3000:]}"
    ray_logs = os.path.join(ray_temp, "session_latest", "logs")
    assert len([f for f in os.listdir(ray_logs) if f.startswith("python-core-driver-")]) >= 2
