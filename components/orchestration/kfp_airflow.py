"""The Airflow side of cluster retraining: the data versions of the triggering Asset events, the KFP target
from an Airflow connection, and a reschedule-mode sensor on a KFP run that cancels the run when it fails.

Imported by `dags/retrain_omni.py` only, in Airflow's venv (it imports airflow.sdk); everything that talks
to KFP runs as `omnistage pipeline ...` through `runner.run_omnistage`, since the kfp SDK is not in that
venv.

Connection `omnistage_kfp` (any conn type; DAG params `kfp_host` / `kfp_namespace` override it):
  host       the KFP API endpoint: `https://kfp.example.com` (a bare host name takes `schema`, default https)
  port       optional
  password   the bearer token (handed to the CLI as OMNISTAGE_KFP_TOKEN, never on the command line)
  extra      {"namespace": "<profile namespace>"} for multi-user KFP
`login` and any other extra key are refused: nothing would use them.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from airflow.sdk import BaseSensorOperator

from components.orchestration.kfp_runs import TOKEN_ENV
from components.orchestration.runner import run_omnistage

log = logging.getLogger(__name__)
CONNECTION_EXTRA_KEYS = {"namespace"}
FAILED_STATES = {"FAILED", "CANCELED", "SKIPPED"}


def versions_from_events(events) -> dict[str, str]:
    """{dataset: version} from the triggering Asset events (their `extra` is the DatasetVersion that
    `omnistage dataset commit` printed); with several events for a dataset, the newest wins."""
    found = sorted((e for asset in events for e in events[asset]), key=lambda e: e.timestamp)
    versions = {}
    for event in found:
        extra = event.extra or {}
        if not extra.get("dataset") or not extra.get("version"):
            raise ValueError(f"an Asset event from {event.source_dag_id}/{event.source_run_id} carries no dataset "
                             f"version in its extra: {extra}; the "
                             "publish task of ingest_multimodal sets it to the `dataset commit` JSON")  # fmt: skip
        versions[extra["dataset"]] = extra["version"]
    return versions


def kfp_target(params: dict) -> tuple[str, str, dict]:
    """(host, namespace, environment for the CLI) from the connection `params['kfp_conn_id']` and the
    `kfp_host` / `kfp_namespace` params; host '' when neither names one (the pipeline runs with kfp.local)."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    host, namespace, env = params.get("kfp_host") or "", params.get("kfp_namespace") or "", {}
    conn_id = params.get("kfp_conn_id") or ""
    try:
        conn = Connection.get(conn_id) if conn_id else None
    except AirflowNotFoundException:
        conn = None
    if conn is not None:
        if conn.login:
            raise ValueError(f"connection {conn_id}: `login` is not used; put the KFP bearer token in `password`")
        unknown = set(conn.extra_dejson) - CONNECTION_EXTRA_KEYS
        if unknown:
            raise ValueError(f"connection {conn_id}: extra keys {sorted(unknown)} are not used; "
                             f"known: {sorted(CONNECTION_EXTRA_KEYS)}")  # fmt: skip
        if not host and conn.host:
            host = conn.host if "://" in conn.host else f"{conn.schema or 'https'}://{conn.host}"
            host += f":{conn.port}" if conn.port else ""
        namespace = namespace or conn.extra_dejson.get("namespace", "")
        if conn.password:
            env[TOKEN_ENV] = conn.password
    return host, namespace, env


def kfp_command(params: dict, *args: str) -> dict:
    """`omnistage ARGS --kfp-host H [--kfp-namespace N] --json`-style call with the connection's token."""
    host, namespace, env = kfp_target(params)
    ns = ["--kfp-namespace", namespace] if namespace else []
    return run_omnistage([*args, "--kfp-host", host, *ns], cwd=params.get("repo"), env=env)


def cancel_kfp_run(context) -> None:
    """on_failure_callback of the wait: the run it waited for must not go on training after Airflow gave up
    (sensor timeout, execution timeout, or its last retry failing)."""
    run = context["ti"].xcom_pull(task_ids="submit_to_kfp") or {}
    if not run.get("run_id"):
        return
    result = kfp_command(context["params"], "pipeline", "cancel", run["run_id"])
    log.info("cancelled KFP run %s after the wait failed: %s", run["run_id"], result)


class KfpRunSensor(BaseSensorOperator):
    """Waits for the KFP run `submit_to_kfp` returned, without holding a worker slot (reschedule mode: each
    poke is one `omnistage pipeline status` call, then the slot is free until the next). The total wait is
    the `wait_timeout_s` param (the sensor's timeout, counted from the first poke across reschedules), the
    poke interval `poke_interval_s`. A failed or cancelled run fails the task; failing for good cancels the
    run (on_failure_callback)."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("on_failure_callback", cancel_kfp_run)
        kwargs.setdefault("execution_timeout", timedelta(minutes=10))  # one poke: a status call
        super().__init__(**kwargs)

    def execute(self, context):
        # Per-run settings: this copy of the operator belongs to this try only.
        self.timeout = float(context["params"]["wait_timeout_s"])
        self.poke_interval = float(context["params"]["poke_interval_s"])
        return super().execute(context)

    def poke(self, context) -> bool:
        from airflow.sdk.exceptions import AirflowFailException

        run = context["ti"].xcom_pull(task_ids="submit_to_kfp") or {}
        if not run.get("run_id"):
            return True  # nothing submitted: this data version was trained before (finish reports it)
        status = kfp_command(context["params"], "pipeline", "status", run["run_id"])
        log.info("KFP run %s: %s", run["run_id"], status["state"])
        if status["state"] in FAILED_STATES:
            raise AirflowFailException(f"KFP run {run['run_id']} ended {status['state']}: {status.get('error')}")
        return status["state"] == "SUCCEEDED"
