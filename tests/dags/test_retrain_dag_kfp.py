"""`airflow dags test retrain_omni` in cluster mode against the stand-in KFP API (kfp_standin.py; no KFP
backend runs here), the connection `omnistage_kfp` given as an Airflow connection in the environment:

- the API accepts the first submission but its answer is lost (503): Airflow retries `submit_to_kfp`, which
  finds that run by its training key, so exactly one run is recorded; the reschedule-mode sensor pokes
  until the run succeeds; the pinned data version is in the submitted training key; token and namespace
  come from the connection;
- the run never finishes: the sensor times out and its failure callback cancels the KFP run.
"""

import json
import subprocess

import pytest

from tests.components.orchestration.kfp_standin import KfpStandin
from tests.conftest import REPO_ROOT, copy_migrated_db
from tests.dags.conftest import AIRFLOW, airflow_home_env

TOKEN = "dag-test-token"
VERSION = "0a1b2c3d4e5f60718293a4b5c6d7e8f9.dir"


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory, migrated_airflow_db):
    root = tmp_path_factory.mktemp("retrain_kfp")
    copy_migrated_db(migrated_airflow_db, root / "airflow.db")
    return dict(airflow_home_env(root / "airflow", db=root / "airflow.db"), AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY="1",
                MLFLOW_TRACKING_URI=f"sqlite:///{root}/mlflow.db", PYTHONPATH=str(REPO_ROOT))  # fmt: skip


def dags_test(env: dict, kfp: KfpStandin, **conf) -> tuple[int, str]:
    connection = {"conn_type": "http", "host": kfp.url, "password": TOKEN, "extra": {"namespace": "team-ml"}}
    conf = {"dataset": "demo", "dataset_dir": "s3://omnistage-data/demo", "dataset_version": VERSION,
            "tokenizer": "s3://omnistage-data/tokenizer.json", "max_steps": 1, "poke_interval_s": 1,
            "wait_timeout_s": 300, "repo": str(REPO_ROOT), **conf}  # fmt: skip
    run = subprocess.run([str(AIRFLOW), "dags", "test", "retrain_omni", "-c", json.dumps(conf)],
                         env={**env, "AIRFLOW_CONN_OMNISTAGE_KFP": json.dumps(connection)}, capture_output=True,
                         text=True, timeout=600, cwd=REPO_ROOT)  # fmt: skip
    return run.returncode, run.stdout + run.stderr


@pytest.mark.slow
def test_a_retried_submit_and_a_rescheduled_wait_make_one_kfp_run(airflow_home):
    with KfpStandin(run_states=["RUNNING", "SUCCEEDED"], lose_create_responses=1, token=TOKEN) as kfp:
        code, log = dags_test(airflow_home, kfp)
    assert code == 0 and "state=success" in log, log[-5000:]
    assert "503" in log  # the first submit failed after the API had recorded the run ...
    assert len(kfp.submissions) == 1, log[-5000:]  # ... and its retry found that run
    (run,) = kfp.runs.values()
    assert run["state"] == "SUCCEEDED"  # the sensor read RUNNING (rescheduled), then SUCCEEDED
    assert "Rescheduling task" in log or "up_for_reschedule" in log.lower(), log[-5000:]
    submitted = kfp.submissions[0]
    key = submitted["runtime_config"]["parameters"]["training_key"]
    assert submitted["display_name"] == f"omnistage-retrain-{key}"
    assert kfp.experiments[submitted["experiment_id"]]["namespace"] == "team-ml"
    assert f"'data_versions': {{'demo': '{VERSION}'}}" in log  # what report logged
    assert f"data versions: {{'demo': '{VERSION}'}}" in log
    assert kfp.terminations == []


@pytest.mark.slow
def test_a_wait_that_times_out_cancels_the_kfp_run(airflow_home):
    with KfpStandin(run_states=["RUNNING"], token=TOKEN) as kfp:
        # --force: the MLflow "trained elsewhere" query is not what this test is about (it costs ~15 s).
        code, log = dags_test(airflow_home, kfp, wait_timeout_s=2, force="--force")
    assert "state=failed" in log, log[-5000:]
    assert "Sensor has timed out" in log
    assert len(kfp.submissions) == 1
    (run_id,) = kfp.runs
    assert kfp.terminations == [run_id], log[-5000:]
    assert kfp.runs[run_id]["state"] in ("CANCELING", "CANCELED")
