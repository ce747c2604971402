"""The cluster form of a DAG step (`OMNISTAGE_RUNNER=kubernetes`): the step's `omnistage` command in a pod
of the project's CPU image on the data pool, its JSON result the task's XCom.

Each step is its own pod and pods share no volume, so the dataset's `out` must be a bucket URI (s3://,
gs://): the probe pod writes the plan there and the shard pod reads it from there. A local `out` is refused
when the task runs, naming the param and the fix. The pods get S3 credentials from the Secret named by
`OMNISTAGE_S3_SECRET` (default omnistage-s3; empty: none, a service-account role grants access) and the
endpoint from `OMNISTAGE_S3_ENDPOINT_URL` (for an S3-compatible store that is not AWS), both read from the
Airflow worker's environment like `OMNISTAGE_IMAGE` and `OMNISTAGE_NAMESPACE`; so is
`OMNISTAGE_RAY_AUTH_SECRET`, the Secret with the Ray cluster's token (see `pod_env`).

Imported only in that mode (by runner.kubernetes_step): it pulls in the cncf-kubernetes provider.
"""

from __future__ import annotations

import os
import shlex

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s

from components.orchestration.object_store import S3_SECRET, require_object_store, s3_env
from components.orchestration.ray_cluster import RAY_EXECUTOR, ray_executor_args

XCOM_FILE = "/airflow/xcom/return.json"


def _env_var(entry: dict) -> k8s.V1EnvVar:
    if "value" in entry:
        return k8s.V1EnvVar(name=entry["name"], value=entry["value"])
    ref = entry["valueFrom"]["secretKeyRef"]
    selector = k8s.V1SecretKeySelector(name=ref["name"], key=ref["key"])
    return k8s.V1EnvVar(name=entry["name"], value_from=k8s.V1EnvVarSource(secret_key_ref=selector))


def pod_env() -> list[k8s.V1EnvVar]:
    """Object-store access for every step; the Ray cluster's auth token when `OMNISTAGE_RAY_AUTH_SECRET` names
    a Secret holding it (key `auth_token`, as KubeRay's authOptions use): Ray >= 2.52 rejects clients without."""
    secret = os.environ.get("OMNISTAGE_S3_SECRET", S3_SECRET) or None
    env = s3_env(secret, os.environ.get("OMNISTAGE_S3_ENDPOINT_URL") or None)
    if ray_secret := os.environ.get("OMNISTAGE_RAY_AUTH_SECRET"):
        token = {"secretKeyRef": {"name": ray_secret, "key": "auth_token"}}
        env += [{"name": "RAY_AUTH_MODE", "value": "token"}, {"name": "RAY_AUTH_TOKEN", "valueFrom": token}]
    return [_env_var(e) for e in env]


def shell_command(args: list[str]) -> str:
    """`omnistage ARGS` writing its JSON result where the operator collects XCom; one shell word per argument
    (Jinja renders `{{ params.x }}` inside the quotes before the pod starts)."""
    return f"mkdir -p {os.path.dirname(XCOM_FILE)} && omnistage {' '.join(shlex.quote(a) for a in args)} > {XCOM_FILE}"


class OmnistagePodOperator(KubernetesPodOperator):
    """A KubernetesPodOperator whose command is checked and completed when the task runs: `out` must be in
    object storage, and the Ray executor options come from the run's param or the Airflow connection."""

    def execute(self, context):
        self.prepare_command(context)
        return super().execute(context)

    def prepare_command(self, context) -> None:
        params = context["params"]
        require_object_store(str(params.get("out", "")), "params.out",
                             "with OMNISTAGE_RUNNER=kubernetes every step runs in its own pod and pods share no "
                             "volume (the probe step's plan would never reach the shard step)")  # fmt: skip
        executor = shlex.join(ray_executor_args(params))
        self.arguments = [arg.replace(RAY_EXECUTOR, executor) for arg in self.arguments]
