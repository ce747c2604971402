"""`airflow dags test ingest_multimodal` end to end against a SQLite Airflow home and a real DVC repo."""

import json
import subprocess

import pytest

from tests.components.versioning.test_dvc_dataset import data_repo  # noqa: F401  (fixture)
from tests.conftest import REPO_ROOT
from tests.dags.conftest import AIRFLOW_PY


@pytest.mark.slow
def test_airflow_dags_test_ingest_multimodal(airflow_env, data_repo):  # noqa: F811
    repo, spec, spec_path = data_repo
    airflow = str(AIRFLOW_PY.parent / "airflow")
    migrate = subprocess.run([airflow, "db", "migrate"], env=airflow_env, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    conf = {"spec": str(spec_path.relative_to(repo)), "out": "datasets/tiny", "repo": str(repo), "workers": 2}
    run = subprocess.run(
        [airflow, "dags", "test", "ingest_multimodal", "-c", json.dumps(conf)],
        env=airflow_env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO_ROOT,
    )
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    assert "state=success" in log
    stats = json.loads((repo / "datasets" / "tiny" / "stats.json").read_text())
    assert stats["version"]["version"].endswith(".dir")
    assert stats["accepted"] + stats["quarantined"] + stats["duplicates"] == stats["inputs"]
    assert sorted((repo / "datasets" / "tiny" / "shards").glob("*.tar"))
