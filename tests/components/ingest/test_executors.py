"""The executor seam: each engine's map keeps submission order and a bounded window; settings are checked.

That the engines give byte-identical shards and reports, and that a killed Ray run resumes, is tested
end to end in test_pipeline.py (`test_same_inputs_give_byte_identical_outputs`,
`test_killed_run_resumes_to_identical_output`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from components.ingest.executors import ExecutorConfig, LocalExecutor
from tests.conftest import REPO_ROOT


def _square_after(i: int, delay: float) -> tuple[int, int]:
    """A job; module level so that pool processes and Ray workers import it."""
    time.sleep(delay)
    return i * i, os.getpid()


def _run_counting_in_flight(pool, threads_suffice: bool) -> tuple[list[tuple[int, int]], int]:
    """Map 12 jobs, every third slow (later jobs finish first); returns results and the most jobs that
    were taken from the input but whose result had not been handed back yet."""
    pulled = 0

    def jobs():
        nonlocal pulled
        for i in range(12):
            pulled += 1
            yield (i, 0.3 if i % 3 == 0 else 0.01)

    results, most_in_flight = [], 0
    for result in pool.map_ordered(_square_after, jobs(), threads_suffice=threads_suffice):
        most_in_flight = max(most_in_flight, pulled - len(results))
        results.append(result)
    return results, most_in_flight


@pytest.mark.parametrize(
    "engine, threads_suffice, window",
    [
        ("local", False, 4),  # 2 processes, 2 * 2 in flight
        ("local", True, 8),  # probing: 4 threads, 2 * 4 in flight
        pytest.param("ray", False, 4, marks=pytest.mark.slow),
    ],
)
def test_map_keeps_order_and_a_bounded_window(engine, threads_suffice, window, request):
    pool = request.getfixturevalue("ray_pool") if engine == "ray" else LocalExecutor(workers=2)
    results, most_in_flight = _run_counting_in_flight(pool, threads_suffice)
    assert [square for square, _ in results] == [i * i for i in range(12)]
    assert most_in_flight == window  # never more (memory stays bounded), and the window is kept full
    if not threads_suffice:
        assert len({pid for _, pid in results} - {os.getpid()}) == 2  # both workers, none in this process


def test_one_local_worker_runs_in_this_process():
    results = list(LocalExecutor(workers=1).map_ordered(_square_after, [(i, 0.0) for i in range(3)]))
    assert results == [(0, os.getpid()), (1, os.getpid()), (4, os.getpid())]


def test_settings_are_checked():
    with pytest.raises(ValueError, match="--executor must be one of"):
        ExecutorConfig(engine="spark")
    with pytest.raises(ValueError, match="only used by the Ray executor: add --executor ray"):
        ExecutorConfig(engine="local", ray_address="auto")


def test_cli_refuses_a_ray_address_without_the_ray_executor(tmp_path):
    from components.cli import app

    args = ["ingest", "--input", str(tmp_path), "--out", str(tmp_path / "out"), "--ray-address", "auto"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "--ray-address auto is only used by the Ray executor: add --executor ray" in result.output
    assert not (tmp_path / "out").exists()


def test_importing_ingestion_does_not_import_ray():
    code = (
        "import sys, components.ingest.pipeline, components.ingest.retry, components.cli; print('ray' in sys.modules)"
    )
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "False"


def test_a_ray_address_nothing_answers_on_fails_fast_with_advice():
    from components.ingest.executors import open_executor

    started = time.monotonic()
    with pytest.raises(ValueError, match=r"127.0.0.1:1: nothing answers there .* GCS port \(6379\)"):
        with open_executor(ExecutorConfig(engine="ray", ray_address="127.0.0.1:1"), workers=1):
            pass
    assert time.monotonic() - started < 15  # ray.init alone would retry for minutes
    with pytest.raises(ValueError, match="expected auto, HOST:PORT or ray://HOST:PORT"):
        with open_executor(ExecutorConfig(engine="ray", ray_address="headnode"), workers=1):
            pass


@pytest.mark.slow
def test_a_local_ray_listens_on_loopback_only(ray_pool):
    import psutil

    listening = set()
    for proc in psutil.Process().children(recursive=True):
        try:  # only Ray's processes: other session fixtures (moto_server, MLflow, Airflow) have their own sockets
            ray_code = any("/site-packages/ray/" in part for part in proc.cmdline())
            if not (ray_code or proc.name().startswith("ray::") or proc.name() in ("gcs_server", "raylet")):
                continue
            conns = proc.net_connections("tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):  # a worker that ended while we looked
            continue
        listening |= {(proc.name(), c.laddr.ip) for c in conns if c.status == psutil.CONN_LISTEN}
    assert {name for name, _ in listening} >= {"gcs_server", "raylet"}
    assert {ip.removeprefix("::ffff:") for _, ip in listening} == {"127.0.0.1"}, listening
