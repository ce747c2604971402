"""The one seam through which Airflow tasks run project code.

Airflow lives in its own virtualenv (the kfp SDK and Airflow's Kubernetes provider cannot share one), so a
DAG task never imports the project's heavy code. It runs the `omnistage` CLI instead:

- `OMNISTAGE_RUNNER=local` (default): a subprocess of `.venv/bin/omnistage` in the repository root; stderr
  streams into the task log, stdout must be the command's JSON result, which becomes the task's XCom. A
  timeout counts from the start and stops the command and everything it started.
- `OMNISTAGE_RUNNER=kubernetes`: a KubernetesPodOperator running the same CLI command in the project image
  (`OMNISTAGE_IMAGE`); the pod writes its JSON result to /airflow/xcom/return.json. Pods share no volume,
  so `out` must be an s3:// or gs:// URI (pod_step.py). Only exercised on a cluster; the pod the operator
  builds is what the tests check here.

A step whose ARGS hold `RAY_EXECUTOR` runs on a Ray cluster when the run names one (the `ray_address` param
or the `omnistage_ray` connection, resolved when the task runs: ray_cluster.py), locally otherwise.

This module imports only the standard library at import time, so DAG files stay cheap to parse.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

from components.images import CPU_IMAGE_VAR, DEFAULT_CPU_IMAGE, cluster_image
from components.orchestration.ray_cluster import expand_ray_executor

REPO_ROOT = Path(__file__).resolve().parents[2]
# The Airflow Asset a new dataset version is published to (ingest_multimodal) and retraining listens on.
DATASET_VERSIONS_ASSET = {"name": "omnistage-dataset-versions", "uri": "file:///omnistage/dataset-versions"}
log = logging.getLogger(__name__)


# The CLI's exit status for bad input (components.cli.common.fail, and typer's usage errors): a missing
# file or an invalid spec fails the same way on every try, so the step fails without Airflow's retries.
BAD_INPUT_EXIT = 2


class StepFailed(RuntimeError):
    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


def runner_mode() -> str:
    mode = os.environ.get("OMNISTAGE_RUNNER", "local")
    if mode not in ("local", "kubernetes"):
        raise ValueError(f"OMNISTAGE_RUNNER must be 'local' or 'kubernetes', got {mode!r}")
    return mode


def omnistage_executable() -> str:
    return os.environ.get("OMNISTAGE_BIN", str(REPO_ROOT / ".venv" / "bin" / "omnistage"))


def run_omnistage(args: list[str], cwd: Path | str | None = None, timeout_s: float | None = None,
                  env: dict[str, str] | None = None) -> dict:  # fmt: skip
    """Run `omnistage ARGS` locally; return its stdout parsed as JSON (or {} when it printed nothing).
    `env` adds variables (secrets such as a token go there, not into ARGS, which are logged)."""
    cmd = [omnistage_executable(), *args]
    log.info("running: %s", shlex.join(cmd))
    # Its own session, so a timeout or a killed task stops the command's children too (kfp.local, torchrun).
    proc = subprocess.Popen(cmd, cwd=cwd or REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, **env} if env else None)  # fmt: skip
    assert proc.stderr is not None and proc.stdout is not None
    stdout_chunks: list[str] = []
    # Both pipes drain at once: read one to its end before the other and a child that fills the unread pipe
    # (64 KiB) blocks forever. The main thread only waits, so the timeout runs while the output streams.
    readers = [threading.Thread(target=lambda: stdout_chunks.append(proc.stdout.read()), daemon=True),
               threading.Thread(target=_forward_lines, args=(proc.stderr,), daemon=True)]  # fmt: skip
    for reader in readers:
        reader.start()
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _stop(proc)
        raise StepFailed(f"`{shlex.join(cmd)}` ran past its {timeout_s:g} s timeout and was stopped") from None
    except BaseException:  # the task itself was killed or interrupted: do not leave the command running
        _stop(proc)
        raise
    finally:
        for reader in readers:
            reader.join(timeout=5)
        if any(reader.is_alive() for reader in readers):  # something the command left running holds its pipes
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            for reader in readers:
                reader.join()
    stdout = "".join(stdout_chunks).strip()
    if code != 0:
        raise StepFailed(f"`{shlex.join(cmd)}` exited with {code}; see the log above",
                         retryable=code != BAD_INPUT_EXIT)
    if not stdout:
        return {}
    try:
        return json.loads(stdout)
    except json.JSONDecodeError as exc:
        raise StepFailed(f"`{shlex.join(cmd)}` printed non-JSON on stdout: {stdout[:300]!r}") from exc


def _forward_lines(stream) -> None:
    """Progress lines into the task log as they come: a long ingestion must show progress."""
    for line in stream:
        print(line, end="", file=sys.stderr)


def _stop(proc: subprocess.Popen, grace_s: float = 10) -> None:
    """SIGTERM the command's process group, SIGKILL what is left after `grace_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _render_local(args: list[str], params: dict) -> list[str]:
    return expand_ray_executor([arg.format(**params) for arg in args], params)


def _render_jinja(args: list[str]) -> list[str]:
    # "{spec}" -> "{{ params.spec }}": the KubernetesPodOperator renders its arguments with Jinja.
    import re

    return [re.sub(r"\{(\w+)\}", r"{{ params.\1 }}", arg) for arg in args]


def omnistage_step(task_id: str, args: list[str], **task_kwargs):
    """A DAG step that runs `omnistage ARGS`; `{name}` in ARGS is replaced by the DAG param `name`.

    Returns a task (local) or a KubernetesPodOperator (cluster); either way its XCom is the JSON result.
    """
    if runner_mode() == "kubernetes":
        return kubernetes_step(task_id, _render_jinja(args), **task_kwargs)
    from airflow.sdk import get_current_context, task

    @task(task_id=task_id, **task_kwargs)
    def run_step() -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        params = get_current_context()["params"]
        try:
            return run_omnistage(_render_local(args, params), cwd=params.get("repo", REPO_ROOT))
        except StepFailed as exc:
            if not exc.retryable:  # bad input: retrying only delays the error (and the runs queued behind)
                raise AirflowFailException(str(exc)) from exc
            raise

    return run_step()


def kubernetes_step(task_id: str, args: list[str], **overrides):
    """The cluster form of a step: the same CLI command in the project image, on the data pool."""
    from components.orchestration.pod_step import OmnistagePodOperator, pod_env, shell_command

    return OmnistagePodOperator(
        task_id=task_id,
        name=f"omnistage-{task_id}".replace("_", "-"),
        namespace=os.environ.get("OMNISTAGE_NAMESPACE", "omnistage"),
        image=cluster_image(CPU_IMAGE_VAR, DEFAULT_CPU_IMAGE),  # refuses latest, naming OMNISTAGE_IMAGE
        cmds=["sh", "-c"],
        arguments=[shell_command(args)],
        env_vars=pod_env(),
        do_xcom_push=True,
        get_logs=True,
        node_selector={"omnistage.io/pool": "cpu-data"},
        **overrides,
    )
