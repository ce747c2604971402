"""Airflow runs in its own venv (.venv-airflow): these fixtures run scripts and CLI commands there."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import REPO_ROOT

AIRFLOW_PY = REPO_ROOT / ".venv-airflow" / "bin" / "python"


@pytest.fixture()
def airflow_env(tmp_path) -> dict:
    if not AIRFLOW_PY.exists():
        pytest.skip(".venv-airflow is missing (make setup)")
    home = tmp_path / "airflow"
    home.mkdir()
    return dict(
        os.environ,
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO_ROOT / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
    )


def run_airflow_python(script: str, env: dict, timeout: int = 120, args: list[str] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(AIRFLOW_PY), "-c", script, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )
