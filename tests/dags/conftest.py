"""Airflow runs in its own venv (.venv-airflow): these fixtures run scripts and CLI commands there."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

AIRFLOW_PY = REPO_ROOT / ".venv-airflow" / "bin" / "python"
AIRFLOW = AIRFLOW_PY.parent / "airflow"


def airflow_home_env(home: Path, db: Path | None = None) -> dict:
    """The environment of an Airflow home at `home` with this repo's DAGs and a SQLite DB (default home/airflow.db)."""
    return dict(
        os.environ,
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO_ROOT / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{db or home / 'airflow.db'}",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
    )


@pytest.fixture(scope="session")
def migrated_airflow_db(tmp_path_factory) -> Path:
    """A SQLite DB after `airflow db migrate`, made once per session (~20 s each time otherwise): tests that run
    `airflow dags test` copy it into their own home with `copy_migrated_db`, so no two tests share state."""
    if not AIRFLOW_PY.exists():
        pytest.skip(".venv-airflow is missing (make setup)")
    home = tmp_path_factory.mktemp("airflow_migrated")
    migrate = subprocess.run([str(AIRFLOW), "db", "migrate"], env=airflow_home_env(home), capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    return home / "airflow.db"


@pytest.fixture()
def airflow_env(tmp_path) -> dict:
    if not AIRFLOW_PY.exists():
        pytest.skip(".venv-airflow is missing (make setup)")
    home = tmp_path / "airflow"
    home.mkdir()
    return airflow_home_env(home)


def run_airflow_python(script: str, env: dict, timeout: int = 120, args: list[str] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(AIRFLOW_PY), "-c", script, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )
