"""The ClusterTrainingRuntime in infra/k8s/trainer/: valid for the Trainer API (kubeflow-trainer-api models),
its node job valid for Kubernetes 1.30, and what the TrainJobs and the pipeline rely on (names, the MLflow
Secret, the torch policy, an image pinned by digest). Nothing is applied: no API server runs here."""

import re

import kubernetes_validate
import pydantic
import pytest

from components.pipelines.cluster import MLFLOW_SECRET, TRAINING_RUNTIME
from components.pipelines.trainjob import CHECKPOINT_VOLUME, NODE
from tests.infra.trainer_manifests import K8S_VERSION, load_runtime, runtime_node_job, validate_trainer_manifest


def _node_container(runtime):
    (job,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    (container,) = job["template"]["spec"]["template"]["spec"]["containers"]
    return job, container


def test_runtime_validates_against_the_trainer_api_and_its_node_job_against_kubernetes():
    runtime = load_runtime()
    validate_trainer_manifest(runtime)
    kubernetes_validate.validate(runtime_node_job(runtime), K8S_VERSION, strict=True)


def test_runtime_is_what_the_trainjobs_reference_and_patch():
    runtime = load_runtime()
    assert runtime["kind"] == "ClusterTrainingRuntime" and runtime["metadata"]["name"] == TRAINING_RUNTIME
    assert runtime["spec"]["mlPolicy"]["torch"] == {}  # Trainer sets torchrun's PET_* rendezvous variables
    job, container = _node_container(runtime)
    # Trainer finds the trainer pods by this label and the container by name; resourcesPerNode,
    # numNodes and the command apply only there.
    assert job["name"] == container["name"] == NODE
    assert job["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    volumes = {v["name"]: v for v in job["template"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes[CHECKPOINT_VOLUME]["persistentVolumeClaim"]["claimName"] == "omnistage-checkpoints"
    assert {m["name"] for m in container["volumeMounts"]} == set(volumes)


def test_runtime_reads_mlflow_and_s3_credentials_from_the_pipelines_secrets_and_pins_its_image():
    from components.orchestration.object_store import S3_SECRET, S3_SECRET_KEYS

    _, container = _node_container(load_runtime())
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert secrets == {
        "MLFLOW_TRACKING_USERNAME": {"name": MLFLOW_SECRET, "key": "username", "optional": True},
        "MLFLOW_TRACKING_PASSWORD": {"name": MLFLOW_SECRET, "key": "password", "optional": True},
        # the same Secret and keys as every other cluster pod (object_store.py); optional for IRSA / workload identity
        **{name: {"name": S3_SECRET, "key": key, "optional": True} for name, key in S3_SECRET_KEYS.items()},
    }
    assert re.fullmatch(r"[\w.\-/]+@sha256:[0-9a-f]{64}", container["image"]), container["image"]


@pytest.mark.parametrize(
    "breakage",
    [
        lambda rt: rt["spec"]["mlPolicy"].update(numNodes="one"),
        lambda rt: rt["spec"].update(mlPolicies=rt["spec"].pop("mlPolicy")),
        lambda rt: rt["spec"]["template"]["spec"]["replicatedJobs"][0].update(replicas="2"),
    ],
    ids=["type", "unknown-field", "jobset-type"],
)
def test_the_trainer_api_check_rejects_a_broken_runtime(breakage):
    runtime = load_runtime()
    breakage(runtime)
    with pytest.raises((pydantic.ValidationError, AssertionError)):
        validate_trainer_manifest(runtime)


def test_the_kubernetes_check_rejects_a_broken_node_job():
    runtime = load_runtime()
    _, container = _node_container(runtime)
    container["volumeMounts"][0]["mountPath"] = 7
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(runtime_node_job(runtime), K8S_VERSION, strict=True)
