"""`ingest_multimodal` end to end the way a user runs it: `make airflow`'s script (scheduler, triggerer,
dag-processor, api-server) on a non-default port with a SQLite home, the run triggered through the REST
API, its tasks executed by the LocalExecutor's task runners against the execution API of that port, on a
real DVC repository."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from tests.conftest import REPO_ROOT
from tests.dags.conftest import AIRFLOW_PY

DAG = "ingest_multimodal"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
def test_ingest_dag_runs_green_under_make_airflow_on_a_non_default_port(data_repo, tmp_path):  # noqa: F811
    if not AIRFLOW_PY.exists():
        pytest.skip(".venv-airflow is missing (make setup)")
    repo, spec, spec_path = data_repo
    port = _free_port()
    assert port != 8080
    log_path = tmp_path / "airflow.log"
    env = dict(os.environ, AIRFLOW_HOME=str(tmp_path / "airflow"), AIRFLOW_PORT=str(port),
               AF_VENV=str(AIRFLOW_PY.parents[1]),
               # no daily run on unpause: it would ingest the default spec and hold the manual run behind it
               OMNISTAGE_INGEST_SCHEDULE="none")  # fmt: skip
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
