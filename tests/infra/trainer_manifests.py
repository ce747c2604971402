"""Test helpers for Kubeflow Trainer manifests: strict validation with the `kubeflow-trainer-api` models, and
the pod a TrainJob's node gets on the shipped runtime, for the Kubernetes schemas.

No Kubernetes API server (nor Trainer's webhooks) can run on the development machines, so the pod is
rendered here: the merge below follows Trainer v2.3.0's pkg/runtime/core/trainingruntime.go (runtimePatches
applied as a strategic merge patch: volumes and containers keyed by name, volumeMounts by mountPath,
nodeSelector merged, tolerations replaced) and its torch plugin (trainer.env upserted by name, the command
and resourcesPerNode set on the "node" container), for the fields omnistage uses. A field it does not
handle fails the render instead of being dropped.
"""

from __future__ import annotations

import copy

import kubernetes_validate
import yaml
from kubeflow_trainer_api import models

from components.pipelines.trainjob import NODE
from tests.conftest import REPO_ROOT

K8S_VERSION = "1.30.0"
RUNTIME_FILE = REPO_ROOT / "infra" / "k8s" / "trainer" / "omnistage-megatron.yaml"
# Trainer's torch plugin sets these on the node container and rejects a TrainJob whose trainer.env names them.
TORCHRUN_ENV = ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT")
MODELS = {
    "TrainJob": models.TrainerV1alpha1TrainJob,
    "ClusterTrainingRuntime": models.TrainerV1alpha1ClusterTrainingRuntime,
}


def validate_trainer_manifest(doc: dict) -> None:
    """`from_dict` raises on wrong types and missing required fields but ignores unknown keys; comparing its
    round trip with the input catches those too (a misspelt `numNode` would vanish)."""
    parsed = MODELS[doc["kind"]].from_dict(doc)
    assert parsed.to_dict() == doc, "fields the Trainer API does not know were dropped"


def load_runtime() -> dict:
    return yaml.safe_load(RUNTIME_FILE.read_text())


def _node_job(runtime: dict) -> dict:
    (job,) = [j for j in runtime["spec"]["template"]["spec"]["replicatedJobs"] if j["name"] == NODE]
    return job


def validate_pod(pod_spec: dict, name: str) -> None:
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": pod_spec},
                                 K8S_VERSION, strict=True)  # fmt: skip


def runtime_node_job(runtime: dict) -> dict:
    """The runtime's trainer replicated job as the batch/v1 Job JobSet creates from it."""
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"{runtime['metadata']['name']}-node-0"},
            "spec": _node_job(runtime)["template"]["spec"]}  # fmt: skip


def _upsert(items: list[dict], updates: list[dict], key: str) -> list[dict]:
    merged = {item[key]: item for item in items}
    for update in updates:
        merged[update[key]] = {**merged.get(update[key], {}), **update}
    return list(merged.values())


def _only(mapping: dict, allowed: set[str], where: str) -> None:
    unknown = set(mapping) - allowed
    assert not unknown, f"{where}: the render does not handle {sorted(unknown)}"


def trainjob_node_pod(runtime: dict, trainjob: dict) -> dict:
    """The pod spec of one node of `trainjob` on `runtime`."""
    pod = copy.deepcopy(_node_job(runtime)["template"]["spec"]["template"]["spec"])
    spec = trainjob["spec"]
    _only(spec, {"runtimeRef", "activeDeadlineSeconds", "trainer", "runtimePatches", "suspend"}, "spec")
    for patch in spec.get("runtimePatches", []):
        for job in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            assert job["name"] == NODE, f"patch targets replicated job {job['name']!r} the runtime lacks"
            pod_patch = job["template"]["spec"]["template"]["spec"]
            _only(pod_patch, {"nodeSelector", "tolerations", "volumes", "containers"}, "runtime patch")
            pod["nodeSelector"] = {**pod.get("nodeSelector", {}), **pod_patch.get("nodeSelector", {})}
            if "tolerations" in pod_patch:
                pod["tolerations"] = pod_patch["tolerations"]
            pod["volumes"] = _upsert(pod.get("volumes", []), pod_patch.get("volumes", []), "name")
            for container_patch in pod_patch.get("containers", []):
                _only(container_patch, {"name", "volumeMounts"}, "container patch")
                (container,) = [c for c in pod["containers"] if c["name"] == container_patch["name"]]
                container["volumeMounts"] = _upsert(container.get("volumeMounts", []),
                                                    container_patch.get("volumeMounts", []), "mountPath")  # fmt: skip
    trainer = spec["trainer"]
    _only(trainer, {"numNodes", "numProcPerNode", "resourcesPerNode", "command", "env"}, "trainer")
    (node,) = [c for c in pod["containers"] if c["name"] == NODE]
    node["command"] = trainer["command"]
    node["resources"] = trainer["resourcesPerNode"]
    node["env"] = _upsert(node.get("env", []), trainer.get("env", []), "name")
    return pod
