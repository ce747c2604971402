"""Object storage as the one place pods on a cluster share, and the credentials every such pod gets.

Pods of a KubernetesPodOperator step, and the head, workers and submitter of a RayJob, share no volume:
the probe phase's plan, the shards and the manifest must live in a bucket for the next pod (or another Ray
node) to see them. This module says which outputs qualify and which environment gives a pod access:

- `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` from the Secret `omnistage-s3` (keys `access_key_id`,
  `secret_access_key`), the same contract as infra/README.md states;
- `AWS_ENDPOINT_URL` when the store is S3-compatible but not AWS (MinIO, Ceph, GCS's XML API): botocore,
  hence s3fs and DVC's S3 remote, read it.

gs:// outputs authenticate as the node's or the pod's Google service account (GKE Workload Identity).
Standard library only: the DAG files import it at parse time.
"""

from __future__ import annotations

OBJECT_STORE_SCHEMES = ("s3", "gs")
S3_SECRET = "omnistage-s3"
# Pod environment variable -> key in the Secret.
S3_SECRET_KEYS = {"AWS_ACCESS_KEY_ID": "access_key_id", "AWS_SECRET_ACCESS_KEY": "secret_access_key"}
ENDPOINT_ENV = "AWS_ENDPOINT_URL"


def is_object_store_uri(uri: str) -> bool:
    scheme, sep, rest = str(uri).partition("://")
    return bool(sep) and scheme in OBJECT_STORE_SCHEMES and bool(rest.strip("/"))


def require_object_store(uri: str, where: str, why: str) -> None:
    """Raise ValueError naming `where` (the flag or param) and the fix when `uri` is not a bucket URI."""
    if not is_object_store_uri(uri):
        schemes = " or ".join(f"{s}://bucket/prefix" for s in OBJECT_STORE_SCHEMES)
        raise ValueError(f"{where} {uri!r} is not in object storage, but {why}: set {where} to {schemes}")


def s3_env(secret: str | None = S3_SECRET, endpoint_url: str | None = None) -> list[dict]:
    """Kubernetes EnvVar entries for S3 access: credentials from `secret` (none when None: the pod's service
    account has a role), the endpoint when given."""
    env: list[dict] = []
    if secret:
        env += [{"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
                for name, key in S3_SECRET_KEYS.items()]  # fmt: skip
    if endpoint_url:
        env.append({"name": ENDPOINT_ENV, "value": endpoint_url})
    return env
