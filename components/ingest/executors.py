"""Where ingestion's parallel work runs: a local pool (default) or Ray, behind one ordered, bounded map.

Both phases hand independent jobs to `Executor.map_ordered`: probe + hash (`probe_input`, one job per
input) and sample building (`shard_writer._build`, one job per sample). Results come back in submission
order, and at most `window` jobs are in flight (submitted, result not yet taken), so memory is bounded
by the window, not by the dataset, and the caller consumes results exactly as it would from a loop.
That is why shards, manifest and quarantine do not depend on the engine or the worker count: the plan
fixes the order, workers only compute.

Engines (`ExecutorConfig`, CLI `--executor local|ray [--ray-address ADDR]`):

- `local`: sample building in a `ProcessPoolExecutor` of `workers` processes (in this process when
  `workers` is 1); probing, which waits on ffprobe and file reads, in `2 * workers` threads.
- `ray`: every job is a Ray task (`num_cpus=1`). Without an address a Ray is started on this machine
  with `num_cpus=workers`, bound to 127.0.0.1, without dashboard, and shut down when ingestion ends
  (also on an error or Ctrl-C). With an address (`auto`, `HOST:6379`, `ray://HOST:10001`) the driver
  joins that cluster and leaves it running; `workers` is then how many tasks it keeps in flight
  (about twice that), so size it to the cluster's CPUs. Cluster workers import this project from
  their own image: they must run the omnistage image of the same commit (see README, "Ingestion on
  Ray"); a preflight task checks that and fails with that advice.

Ray is imported only when a Ray executor opens, so `import components.ingest` never imports it.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor as _FuturesPool
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

R = TypeVar("R")
H = TypeVar("H")
log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the folder holding `components/` of this driver


@dataclass(frozen=True)
class ExecutorConfig:
    """The engine choice, as the CLI and the library functions take it."""

    engine: str = "local"
    """`local` (process pool on this machine) or `ray`."""
    ray_address: str | None = None
    """Only with `ray`: a running cluster to join (`auto`, `HOST:PORT`, `ray://HOST:10001`); none starts
    a Ray on this machine for the run."""

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"--executor must be one of {list(ENGINES)}, got {self.engine!r}")
        if self.ray_address is not None and self.engine != "ray":
            raise ValueError(
                f"--ray-address {self.ray_address} is only used by the Ray executor: add --executor ray, "
                "or drop --ray-address to run on the local process pool"
            )
        if self.ray_address is not None and not self.ray_address.strip():
            raise ValueError("--ray-address is empty: give auto, HOST:PORT or ray://HOST:10001, or leave it out")


LOCAL = ExecutorConfig()


class Executor(Protocol):
    workers: int

    def map_ordered(self, fn: Callable[..., R], jobs: Iterable[tuple], *, threads_suffice: bool = False) -> Iterator[R]:
        """`fn(*job)` for each job, yielded in the order of `jobs`, with a bounded number in flight.
        `threads_suffice`: the work mostly waits on subprocesses or I/O (the GIL is free), so a local
        engine may run it in threads."""
        ...


def _ordered_window(
    submit: Callable[[tuple], H], result: Callable[[H], R], jobs: Iterable[tuple], window: int
) -> Iterator[R]:
    """Submit jobs while fewer than `window` are pending; yield results oldest first."""
    pending: deque[H] = deque()
    for job in jobs:
        pending.append(submit(job))
        if len(pending) >= window:
            yield result(pending.popleft())
    while pending:
        yield result(pending.popleft())


class LocalExecutor:
    """Today's engine: processes for CPU-bound work, threads for I/O-bound work, on this machine."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)

    def map_ordered(self, fn: Callable[..., R], jobs: Iterable[tuple], *, threads_suffice: bool = False) -> Iterator[R]:
        if threads_suffice:
            # Probing waits on ffprobe and reads: twice as many threads as workers keep the CPUs busy.
            slots = max(2, 2 * self.workers)
            yield from self._pooled(ThreadPoolExecutor(max_workers=slots), fn, jobs, 2 * slots)
        elif self.workers == 1:  # no pool: no process start, no pickling of results
            for job in jobs:
                yield fn(*job)
        else:
            yield from self._pooled(ProcessPoolExecutor(max_workers=self.workers), fn, jobs, 2 * self.workers)

    @staticmethod
    def _pooled(pool: _FuturesPool, fn: Callable[..., R], jobs: Iterable[tuple], window: int) -> Iterator[R]:
        with pool:
            try:
                yield from _ordered_window(lambda job: pool.submit(fn, *job), lambda f: f.result(), jobs, window)
            finally:  # a consumer that stops early (an error while writing) does not wait for queued jobs
                pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Ray tasks, `2 * workers` in flight. Open it with `open_executor`, which starts or joins Ray."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._remote: dict[Callable, Any] = {}

    @property
    def address(self) -> str:
        """The cluster's GCS address: what another driver passes as `--ray-address` to join it."""
        import ray

        return ray.get_runtime_context().gcs_address

    def _task(self, fn: Callable) -> Any:
        import ray

        if fn not in self._remote:
            # One CPU per task, as one pool process: decoding is single-threaded (decode.py), so a task
            # that took more would leave CPUs idle. Ray retries a task whose worker died; jobs are pure.
            self._remote[fn] = ray.remote(num_cpus=1)(fn)
        return self._remote[fn]

    def map_ordered(self, fn: Callable[..., R], jobs: Iterable[tuple], *, threads_suffice: bool = False) -> Iterator[R]:
        import ray

        task = self._task(fn)
        pending: list = []

        def submit(job: tuple):
            ref = task.remote(*job)
            pending.append(ref)
            return ref

        def result(ref) -> R:
            pending.remove(ref)
            return ray.get(ref)

        try:
            yield from _ordered_window(submit, result, jobs, 2 * self.workers)
        finally:  # on a cluster that outlives this run, do not leave its work running for nothing
            for ref in pending:
                ray.cancel(ref)


def worker_env() -> dict[str, str]:
    """Environment for Ray workers: the decode thread count the driver uses (single-threaded by default,
    as the pool's workers)."""
    return {"OMNISTAGE_DECODE_THREADS": os.environ.get("OMNISTAGE_DECODE_THREADS", "1")}


def local_ray_init_kwargs(workers: int) -> dict:
    """`ray.init` arguments for a Ray started on this machine for one run."""
    # Workers must import the driver's code, not whatever `components` an installed package points at:
    # the driver's project root goes first on their PYTHONPATH.
    paths = [str(PROJECT_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = worker_env() | {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
    return {
        "address": "local",  # a new Ray even when RAY_ADDRESS points at a cluster: that needs --ray-address
        "num_cpus": max(1, workers),
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "log_to_driver": False,  # task errors still come back with their traceback through ray.get
        "runtime_env": {"env_vars": env},
    }


def _prepare_local_ray_environment() -> None:
    """Settings Ray reads from the environment, so they must be set before `import ray`."""
    if "ray" in sys.modules:  # imported before (a notebook, a test): Ray uses what it read then
        if os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "0":
            log.warning("Ray was imported before this run: its local Ray binds to the machine's address")
        return
    # On Linux Ray binds its servers to the machine's address; the macOS/Windows single-node switch
    # makes it use 127.0.0.1, which is all a one-machine run needs (nothing else can then connect).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # Token authentication is Ray's default for a new local cluster; saying so explicitly keeps it on
    # and stops the warning Ray prints when it has to choose. (Not when joining a cluster: whether it
    # wants a token is the cluster's setting, which Ray reads itself.)
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    _prepare_ray_environment()


def _prepare_ray_environment() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report, no banner about it


@contextmanager
def _ray_session(config: ExecutorConfig, workers: int) -> Iterator[RayExecutor]:
    if config.ray_address is None:
        _prepare_local_ray_environment()
    else:
        _check_reachable(config.ray_address)  # before importing Ray: a wrong address costs nothing
        _prepare_ray_environment()
    import ray

    if ray.is_initialized():
        raise RuntimeError("Ray is already initialised in this process: pass its open RayExecutor instead")
    if config.ray_address is None:
        kwargs = local_ray_init_kwargs(workers)
        log.info("starting a local Ray with %d CPUs", kwargs["num_cpus"])
    else:
        kwargs = {"address": config.ray_address, "logging_level": logging.WARNING,
                  "runtime_env": {"env_vars": worker_env()}}  # fmt: skip
        log.info("joining the Ray cluster at %s", config.ray_address)
    try:
        ray.init(**kwargs)
    except (ConnectionError, TimeoutError) as exc:
        raise ValueError(f"--ray-address {config.ray_address}: cannot join a Ray cluster there ({exc})") from exc
    try:
        executor = RayExecutor(workers)
        if config.ray_address is not None:
            _check_cluster_imports_project(config.ray_address)
        yield executor
    finally:
        ray.shutdown()  # stops a Ray this run started; only disconnects from a cluster


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast on an address nothing listens on: `ray.init` would retry it for minutes."""
    if address == "auto":  # Ray finds the cluster this machine belongs to, or says it found none
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--ray-address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ValueError(
            f"--ray-address {address}: nothing answers there ({exc}); is the Ray head running, and is that its "
            "GCS port (6379) or, with ray://, its client server port (10001)?"
        ) from exc


def _project_marker() -> str:
    """Runs on a Ray worker: importing this module there is the check."""
    return str(PROJECT_ROOT)


def _check_cluster_imports_project(address: str) -> None:
    import ray

    try:
        where = ray.get(ray.remote(num_cpus=0)(_project_marker).remote(), timeout=300)
    except Exception as exc:  # ModuleNotFoundError comes back wrapped in a Ray error type
        raise ValueError(
            f"--ray-address {address}: a check task on the cluster failed ({type(exc).__name__}: {exc}); "
            "its workers must import omnistage: run the cluster's head and worker pods on the omnistage "
            "image of this commit (README, 'Ingestion on Ray')"
        ) from exc
    log.info("Ray cluster workers import omnistage from %s", where)


@contextmanager
def open_executor(executor: ExecutorConfig | Executor, workers: int) -> Iterator[Executor]:
    """The executor to run on: an already open one as is (several phases share one Ray start), or a new
    one for `executor`'s engine, closed (Ray stopped or left) on exit."""
    if not isinstance(executor, ExecutorConfig):
        if executor.workers != max(1, workers):
            raise ValueError(f"an open executor with {executor.workers} workers was given {workers} workers")
        yield executor
    elif executor.engine == "local":
        yield LocalExecutor(workers)
    else:
        with _ray_session(executor, workers) as ray_executor:
            yield ray_executor
