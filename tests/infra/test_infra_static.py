"""infra/ checked statically (no cluster, Docker engine, Helm or Terraform binary here): manifests validate
against Kubernetes schemas, node pools carry the labels and taints the compiled pipeline uses, Dockerfiles
copy files that exist."""

import re

import hcl2
import kubernetes_validate
import pytest
import yaml

from components.pipelines.cluster import ACCELERATOR_LABEL, GPU_TAINT, POOL_LABEL
from components.pipelines.curriculum_pipeline import compile_pipeline
from components.pipelines.network import EFA_RESOURCE, network_profile
from components.pipelines.trainjob import build_trainjob
from components.specs.curriculum import CurriculumSpec
from tests.conftest import REPO_ROOT
from tests.infra.rayjob_schema import rayjob_pods
from tests.infra.trainer_manifests import load_runtime, trainjob_node_pod

INFRA = REPO_ROOT / "infra"
K8S_VERSION = "1.30.0"
MANIFESTS = sorted(p for p in (INFRA / "k8s").rglob("*.yaml") if p.name != "kustomization.yaml")
# Kinds from CRDs have no schema in kubernetes-validate: tests/infra/test_trainer_runtime.py checks them with
# the Trainer API models, tests/infra/test_rayjob.py against KubeRay's CRD schema (both their pod templates
# against the Kubernetes schemas), tests/infra/test_kueue.py against Kueue's CRD schemas.
CRD_GROUPS = ("trainer.kubeflow.org/", "ray.io/", "kueue.x-k8s.io/")
TERRAFORM = sorted((INFRA / "terraform").rglob("*.tf"))
NODE_POOL_KINDS = ("google_container_node_pool", "aws_eks_node_group")


def _unquote(value):
    return value.strip('"') if isinstance(value, str) else value


@pytest.mark.parametrize("path", MANIFESTS, ids=[str(p.relative_to(INFRA)) for p in MANIFESTS])
def test_manifest_validates_against_kubernetes_schemas(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        if not doc["apiVersion"].startswith(CRD_GROUPS):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kustomizations_list_files_that_exist():
    for kustomization in (INFRA / "k8s").rglob("kustomization.yaml"):
        doc = yaml.safe_load(kustomization.read_text())
        for resource in doc["resources"]:
            target = kustomization.parent / resource  # a file, or a base directory with its own kustomization
            assert target.is_file() or (target / "kustomization.yaml").is_file(), f"{kustomization}: {resource} missing"


def test_airflow_helm_values_use_the_kubernetes_executor_and_the_cluster_runner():
    values = yaml.safe_load((INFRA / "helm" / "airflow-values.yaml").read_text())
    assert values["executor"] == "KubernetesExecutor"
    env = {e["name"]: e["value"] for e in values["env"]}
    assert env["OMNISTAGE_RUNNER"] == "kubernetes" and env["MLFLOW_TRACKING_URI"].startswith("http://mlflow.")


def _node_pools():
    pools = {}
    for path in TERRAFORM:
        for block in hcl2.load(path.open())["resource"]:
            for kind, resources in block.items():
                if _unquote(kind) not in NODE_POOL_KINDS:
                    continue
                for name, body in resources.items():
                    config = body.get("node_config", [body])[0]
                    labels = {_unquote(k): _unquote(v) for k, v in config.get("labels", {}).items()}
                    taints = [{k: _unquote(v) for k, v in t.items()} for t in config.get("taint", [])]
                    gpus = [_unquote(g["type"]) for g in config.get("guest_accelerator", [])]  # GKE only
                    pools[(path.parent.name, _unquote(name))] = {"labels": labels, "taints": taints, "gpus": gpus}
    return pools


def _placements(tmp_path) -> list[dict]:
    """Every node selector and toleration list the full recipe puts on a cluster: its compiled pipeline's
    task pods (the multi-node stages' launchers), its TrainJobs' node pods and the ingestion RayJob's pods."""
    curriculum_path = REPO_ROOT / "data_specs" / "curriculum" / "longcat_omni.yaml"
    curriculum = CurriculumSpec.load(curriculum_path)
    docs = list(yaml.safe_load_all(compile_pipeline(curriculum_path, tmp_path / "p.yaml").read_text()))
    executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    placements = [{"selector": e["nodeSelector"]["labels"], "tolerations": e.get("tolerations", [])}
                  for e in executors.values() if "nodeSelector" in e]  # fmt: skip
    for stage in curriculum.stages:
        if stage.resources.nodes > 1:
            pod = trainjob_node_pod(load_runtime(), build_trainjob(curriculum, curriculum_path, stage.name, "r"))
            placements.append({"selector": pod["nodeSelector"], "tolerations": pod["tolerations"]})
    for path in (INFRA / "k8s" / "ray").glob("*.yaml"):
        for pod in rayjob_pods(yaml.safe_load(path.read_text())).values():
            placements.append({"selector": pod["nodeSelector"], "tolerations": pod.get("tolerations", [])})
    return placements


def test_terraform_pools_match_the_node_selectors_and_tolerations_of_pipeline_and_trainjobs(tmp_path):
    pools = _node_pools()
    assert {cloud for cloud, _ in pools} == {"gke", "eks"}
    placements = _placements(tmp_path)
    gpu_placements = [p for p in placements if p["tolerations"]]
    assert gpu_placements and len(gpu_placements) < len(placements)  # TrainJob nodes and CPU launchers
    for cloud in ("gke", "eks"):
        labelled = {p["labels"].get(POOL_LABEL): p for (c, _), p in pools.items() if c == cloud}
        for placement in placements:
            pool = labelled.get(placement["selector"][POOL_LABEL])
            assert pool, f"{cloud}: no node pool labelled {POOL_LABEL}={placement['selector'][POOL_LABEL]}"
            # Every label selected is one the pool's nodes carry, so the pod can schedule there.
            assert placement["selector"].items() <= pool["labels"].items(), (cloud, placement["selector"])
            gpu_pool = any(t["key"] == GPU_TAINT and t["effect"] == "NO_SCHEDULE" for t in pool["taints"])
            assert gpu_pool == bool(placement["tolerations"]), (cloud, placement)  # GPUs only on GPU pools
        for placement in gpu_placements:
            assert placement["tolerations"] == [{"key": GPU_TAINT, "operator": "Exists", "effect": "NoSchedule"}]
            assert ACCELERATOR_LABEL in placement["selector"]
    for (cloud, name), pool in pools.items():  # the label names the GPU GKE attaches
        if pool["gpus"]:
            assert pool["gpus"] == [pool["labels"][ACCELERATOR_LABEL]], (cloud, name)


@pytest.mark.parametrize("dockerfile", sorted((INFRA / "docker").glob("*.Dockerfile")), ids=lambda p: p.name)
def test_dockerfiles_copy_files_that_exist(dockerfile):
    copies = re.findall(r"^COPY\s+(.+?)\s+\S+$", dockerfile.read_text(), flags=re.MULTILINE)
    assert copies
    for sources in copies:
        for source in sources.split():
            assert (REPO_ROOT / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"
    # The project is installed editable from the WORKDIR: the code reads data_specs/ (expectation and eval
    # suites) relative to components/, which a plain `pip install .` would move into site-packages.
    assert "pip install -e ." in dockerfile.read_text()
    text = dockerfile.read_text()
    workdir = re.search(r"^WORKDIR\s+(\S+)$", text, flags=re.MULTILINE).group(1)
    assert re.search(rf"^COPY\s+data_specs\s+(\./data_specs|{workdir}/data_specs)$", text, flags=re.MULTILINE)


def test_the_eks_gpu_pool_has_the_efa_interfaces_the_efa_profile_requests():
    doc = hcl2.load((INFRA / "terraform" / "eks" / "main.tf").open())
    variables = {_unquote(k): v for block in doc["variable"] for k, v in block.items()}
    resources = {(_unquote(kind), _unquote(name)): body for block in doc["resource"]
                 for kind, named in block.items() for name, body in named.items()}  # fmt: skip
    template = resources[("aws_launch_template", "gpu_h100")]
    (dynamic,) = template["dynamic"]
    (interfaces,) = [v for k, v in dynamic.items() if _unquote(k) == "network_interfaces"]
    assert interfaces["for_each"] == "${range(var.efa_interfaces)}"
    assert _unquote(interfaces["content"][0]["interface_type"]) == "efa"
    # One interface per network card: the profile's vpc.amazonaws.com/efa count is what a node advertises.
    assert variables["efa_interfaces"]["default"] == int(network_profile("efa").resources[EFA_RESOURCE])
    node_group = resources[("aws_eks_node_group", "gpu_h100")]
    assert node_group["launch_template"][0]["id"] == "${aws_launch_template.gpu_h100.id}"
    assert "disk_size" not in node_group  # EKS rejects disk_size beside a launch template
    assert template["placement"][0]["group_name"] == "${aws_placement_group.gpu_h100.name}"
