"""Which Ray cluster, if any, a DAG run's ingestion steps use, decided when the task runs.

A run is pointed at a Ray cluster by, in this order:

1. the DAG param `ray_address` (non-empty), e.g. `ray://ray-head.omnistage.svc:10001` or `127.0.0.1:6379`;
2. the Airflow connection `omnistage_ray`: its host and port form the address; connection type `ray`
   means a Ray Client address (`ray://host:port`, a cluster elsewhere), any other type the cluster's
   GCS address `host:port` (the task runs on a node of that cluster), e.g.
   `AIRFLOW_CONN_OMNISTAGE_RAY=ray://ray-head.omnistage.svc:10001`;
3. neither: the steps run with the local executor, as before.

The connection is looked up at run time (never while the DAG file parses: that would hit the metadata
database or a secrets backend on every parse). Standard library only at import time.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from components.orchestration.object_store import require_object_store

RAY_CONNECTION = "omnistage_ray"
PARAM = "ray_address"
# Replaced, when a step runs, by the executor options (`--executor ray --ray-address ADDR`, or nothing).
RAY_EXECUTOR = "@omnistage-ray-executor@"
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}


def connection_address(conn_type: str | None, host: str | None, port: int | None) -> str:
    if not host:
        raise ValueError(f"Airflow connection '{RAY_CONNECTION}' has no host: set it to the Ray head's address")
    hostport = f"{host}:{port}" if port else host
    return f"ray://{hostport}" if conn_type == "ray" else hostport


def _address_from_connection() -> str | None:
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(RAY_CONNECTION)
    except AirflowNotFoundException:
        return None
    return connection_address(conn.conn_type, conn.host, conn.port)


def resolve_ray_address(params: dict) -> str | None:
    """The Ray address for this run: the param, else the connection, else None (local executor)."""
    address = str(params.get(PARAM) or "").strip()
    return address or _address_from_connection()


def is_on_this_machine(address: str) -> bool:
    """Whether the cluster's workers share this machine's files (a head started here, or `auto`)."""
    if address == "auto":
        return True
    return (urlsplit(address if "://" in address else f"//{address}").hostname or "") in _LOCAL_HOSTS


def ray_executor_args(params: dict) -> list[str]:
    """`--executor ray --ray-address ADDR` when a cluster is configured, else nothing. A remote cluster's
    workers cannot see a local `out`: refused, naming the param and the fix."""
    address = resolve_ray_address(params)
    if not address:
        return []
    if not is_on_this_machine(address):
        require_object_store(str(params.get("out", "")), "params.out",
                             f"the Ray cluster at {address} runs on other machines, which cannot see a local "
                             "folder")  # fmt: skip
    return ["--executor", "ray", "--ray-address", address]


def expand_ray_executor(args: list[str], params: dict) -> list[str]:
    """ARGS with the RAY_EXECUTOR marker replaced by this run's executor options."""
    if RAY_EXECUTOR not in args:
        return list(args)
    extra = ray_executor_args(params)
    return [word for arg in args for word in (extra if arg == RAY_EXECUTOR else [arg])]
