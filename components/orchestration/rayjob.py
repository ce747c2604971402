"""Ingestion on a Ray cluster as a KubeRay RayJob (ray.io/v1), generated from a dataset spec.

The RayJob brings up a RayCluster on the CPU data pool (a head and `num_workers` workers in the project's
CPU image), submits `omnistage ingest --executor ray --ray-address auto` to it, and deletes the cluster
when the job ends. Pods share no volume, so everything the job reads or writes is in object storage: the
dataset's sources and `--out` must be bucket URIs; the spec itself is read from the image, which holds the
repository's data_specs/ at its WORKDIR (so an image digest pins the spec too).

    manifest = build_rayjob(DatasetSpec.load(path), path, "s3://bucket/datasets/demo", RayJobConfig())
    omnistage dataset rayjob --spec data_specs/datasets/demo_s3.yaml --out s3://bucket/datasets/demo

infra/k8s/ray/ holds the example rendered for demo_s3.yaml; tests/infra/test_rayjob.py checks it equals
what this module renders, validates it against KubeRay's CRD schema and its pods against Kubernetes 1.30.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

from components.images import DEFAULT_CPU_IMAGE, image_problem
from components.orchestration.object_store import S3_SECRET, is_object_store_uri, require_object_store, s3_env
from components.pipelines.cluster import DATA_POOL, POOL_LABEL
from components.specs.dataset import DatasetSpec

API_VERSION = "ray.io/v1"
RAY_VERSION = "2.60.0"  # the image's Ray (pyproject.toml's pin); KubeRay configures the cluster for it
REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_WORKDIR = PurePosixPath("/opt/omnistage")  # infra/docker/cpu.Dockerfile: WORKDIR, holds data_specs/
# Placeholder like the Trainer runtime's: replace with the digest the push of infra/docker/cpu.Dockerfile reports.
DEFAULT_IMAGE = DEFAULT_CPU_IMAGE
HEAD_CONTAINER, WORKER_CONTAINER = "ray-head", "ray-worker"
# KubeRay names the cluster <rayjob>-<5 chars> and its services after the cluster; it rejects longer names.
MAX_NAME = 47
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$")
# Ray keeps its object store in /dev/shm; a container's default is 64 MiB, too small for decoded frames.
SHM = "dshm"
HEAD_PORTS = [{"name": "gcs-server", "containerPort": 6379}, {"name": "dashboard", "containerPort": 8265},
              {"name": "client", "containerPort": 10001}]  # fmt: skip


class RayJobError(ValueError):
    """A dataset or setting that cannot become a RayJob; the message names the flag or field and the fix."""


@dataclass(frozen=True)
class PodResources:
    cpus: int
    """Whole CPUs, requested and limited (Ray schedules one ingestion task per CPU)."""
    memory: str
    """A Kubernetes quantity, e.g. "52Gi"; requested and limited, /dev/shm (Ray's object store) counts in it."""

    def __post_init__(self) -> None:
        if self.cpus < 1:
            raise RayJobError(f"cpus must be at least 1, got {self.cpus}")
        if not _QUANTITY.match(self.memory):
            raise RayJobError(f"memory {self.memory!r} is not a Kubernetes quantity such as 8Gi or 52Gi")

    def as_k8s(self) -> dict:
        amounts = {"cpu": str(self.cpus), "memory": self.memory}
        return {"requests": dict(amounts), "limits": dict(amounts)}


@dataclass(frozen=True)
class RayJobConfig:
    """Where and how the ingestion's Ray cluster runs. Defaults fit the Terraform `cpu-data` pools
    (n2-standard-16 / m6i.4xlarge: 16 vCPU, 64 GB, less what the kubelet and daemon sets reserve)."""

    image: str = DEFAULT_IMAGE
    """The CPU image by digest (preferred) or an explicit tag; not `latest`: a worker replaced mid-job that
    pulls a moved tag would run other code than its peers."""
    namespace: str = "omnistage"
    num_workers: int = 2
    """Worker pods (replicas of the one worker group); ingestion runs num_workers * worker.cpus tasks at once."""
    head: PodResources = field(default_factory=lambda: PodResources(2, "8Gi"))
    """The head runs the driver (plan, manifest) and no ingestion tasks (num-cpus 0)."""
    worker: PodResources = field(default_factory=lambda: PodResources(14, "52Gi"))
    node_pool: str = DATA_POOL
    """Value of the omnistage.io/pool label of the nodes; the CPU pool is untainted, so no toleration."""
    s3_secret: str | None = S3_SECRET
    """Secret with access_key_id / secret_access_key; None when a service-account role grants access."""
    s3_endpoint_url: str | None = None
    """AWS_ENDPOINT_URL for an S3-compatible store that is not AWS (MinIO, Ceph); None for AWS S3 or gs://."""
    active_deadline_s: int = 6 * 3600
    """The whole job, cluster start included; KubeRay stops it past this."""
    pre_running_deadline_s: int = 1800
    """Until the job runs: a cluster that cannot schedule (no room in the pool) fails instead of waiting forever."""
    ttl_after_finished_s: int = 3600
    """How long the finished RayJob (status, logs' pointers) stays before deletion; the cluster goes at once."""
    backoff_limit: int = 2
    """Whole retries, each on a fresh cluster; ingestion resumes from what is already in --out."""
    submitter_backoff_limit: int = 2
    """Retries of the submitter pod (`ray job submit`) when it cannot reach the head yet."""

    def __post_init__(self) -> None:
        problem = image_problem(self.image)
        if problem:
            raise RayJobError(f"--image {self.image!r} {problem}: give the CPU image by digest (name@sha256:<64 hex>) "
                              "or an explicit tag other than latest, so every Ray node runs the same code")  # fmt: skip
        if self.num_workers < 1:
            raise RayJobError(f"--workers must be at least 1 worker pod, got {self.num_workers}")
        for name in ("active_deadline_s", "pre_running_deadline_s"):
            if getattr(self, name) < 1:
                raise RayJobError(f"{name} must be a positive number of seconds, got {getattr(self, name)}")
        for name in ("ttl_after_finished_s", "backoff_limit", "submitter_backoff_limit"):
            if getattr(self, name) < 0:
                raise RayJobError(f"{name} must not be negative, got {getattr(self, name)}")

    @property
    def num_ingest_workers(self) -> int:
        return self.num_workers * self.worker.cpus


def rayjob_name(spec: DatasetSpec, out: str) -> str:
    """`ingest-<dataset>-<hash of out>`: deterministic, so applying the same job twice finds the first one,
    and two outputs of one dataset get two jobs. An RFC 1035 label of at most 47 characters (KubeRay's bound)."""
    digest = hashlib.sha256(out.encode()).hexdigest()[:8]
    readable = re.sub(r"[^a-z0-9]+", "-", f"ingest-{spec.name}".lower()).strip("-")
    return f"{readable[: MAX_NAME - len(digest) - 1].rstrip('-')}-{digest}"


def spec_in_image(spec_file: Path | str) -> PurePosixPath:
    """The spec's path in the image; only the repository's data_specs/ is copied there."""
    path = Path(spec_file).resolve()
    if not path.is_relative_to(REPO_ROOT / "data_specs"):
        raise RayJobError(f"--spec {spec_file}: the RayJob reads the spec from the image, which holds only this "
                          f"repository's data_specs/; put the spec under {REPO_ROOT / 'data_specs'} and rebuild "
                          "the image")  # fmt: skip
    return IMAGE_WORKDIR / path.relative_to(REPO_ROOT).as_posix()


def _refuse_local_sources(spec: DatasetSpec, spec_file: Path | str) -> None:
    for index, source in enumerate(spec.sources):
        if not is_object_store_uri(source.location):
            key = f"sources[{index}].{'manifest.path' if source.manifest else 'path'}"
            raise RayJobError(f"{spec_file}: {key} of source '{source.name}' is {source.location!r}, which the "
                              "RayJob's pods cannot see (they share no volume with this machine): upload the files "
                              "to a bucket and set it to an s3:// or gs:// URI")  # fmt: skip


def ingest_entrypoint(spec_file: Path | str, out: str, config: RayJobConfig) -> list[str]:
    """What the job runs on the head: the ingestion driver, attached to the RayJob's own cluster."""
    return ["omnistage", "ingest", "--spec", str(spec_in_image(spec_file)), "--out", out, "--executor", "ray",
            "--ray-address", "auto", "--workers", str(config.num_ingest_workers), "--json"]  # fmt: skip


def _pod_template(container: str, resources: PodResources, config: RayJobConfig, ports: list[dict]) -> dict:
    main = {
        "name": container,
        "image": config.image,
        "resources": resources.as_k8s(),
        "env": s3_env(config.s3_secret, config.s3_endpoint_url),
        "volumeMounts": [{"name": SHM, "mountPath": "/dev/shm"}],
    }
    if ports:
        main["ports"] = [dict(p) for p in ports]
    if not main["env"]:
        del main["env"]
    return {"spec": {"nodeSelector": {POOL_LABEL: config.node_pool}, "containers": [main],
                     "volumes": [{"name": SHM, "emptyDir": {"medium": "Memory"}}]}}  # fmt: skip


def manifest_yaml(manifest: dict) -> str:
    """The manifest as YAML, keys in the order built, long lines (the entrypoint) unwrapped."""
    return yaml.safe_dump(manifest, sort_keys=False, width=1000)


def build_rayjob(spec: DatasetSpec, spec_file: Path | str, out: str, config: RayJobConfig | None = None) -> dict:
    """The RayJob manifest (a plain dict, ready for YAML or the Kubernetes API) that ingests `spec` into `out`."""
    config = config or RayJobConfig()
    require_object_store(out, "--out", "the RayJob's head, workers and submitter pods share no volume, and a "
                         "local folder would stay inside one pod and vanish with it")  # fmt: skip
    _refuse_local_sources(spec, spec_file)
    entrypoint = ingest_entrypoint(spec_file, out, config)
    head = {
        # No ingestion tasks on the head: it runs the driver and the GCS, and stays responsive under load.
        "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
        "template": _pod_template(HEAD_CONTAINER, config.head, config, HEAD_PORTS),
    }
    workers = {
        "groupName": config.node_pool,
        "replicas": config.num_workers,
        "minReplicas": config.num_workers,
        "maxReplicas": config.num_workers,
        "rayStartParams": {},  # KubeRay sets num-cpus and memory from the container's limits
        "template": _pod_template(WORKER_CONTAINER, config.worker, config, []),
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "RayJob",
        "metadata": {
            "name": rayjob_name(spec, out),
            "namespace": config.namespace,
            "labels": {"app.kubernetes.io/part-of": "omnistage", "omnistage.io/dataset": spec.name},
            "annotations": {"omnistage.io/spec": str(spec_in_image(spec_file)), "omnistage.io/out": out},
        },
        "spec": {
            "entrypoint": shlex.join(entrypoint),
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": config.ttl_after_finished_s,
            "activeDeadlineSeconds": config.active_deadline_s,
            "preRunningDeadlineSeconds": config.pre_running_deadline_s,
            "backoffLimit": config.backoff_limit,
            "submitterConfig": {"backoffLimit": config.submitter_backoff_limit},
            "rayClusterSpec": {
                "rayVersion": RAY_VERSION,
                # Ray >= 2.52 authenticates every connection with a token; KubeRay generates one per cluster
                # in a Secret and gives it to the head, the workers and the submitter (RAY_AUTH_TOKEN).
                "authOptions": {"mode": "token"},
                "headGroupSpec": head,
                "workerGroupSpecs": [workers],
            },
        },
    }
