"""infra/ checked statically (no cluster, Docker engine, Helm or Terraform binary here): manifests validate
against Kubernetes schemas, node pools carry the labels and taints the compiled pipeline uses, Dockerfiles
copy files that exist."""

import re

import hcl2
import kubernetes_validate
import pytest
import yaml

from components.pipelines.curriculum_pipeline import GPU_TAINT, POOL_LABEL, compile_pipeline
from components.specs.curriculum import CurriculumSpec
from tests.conftest import REPO_ROOT

INFRA = REPO_ROOT / "infra"
K8S_VERSION = "1.30.0"
MANIFESTS = sorted(p for p in (INFRA / "k8s").rglob("*.yaml") if p.name != "kustomization.yaml")
TERRAFORM = sorted((INFRA / "terraform").rglob("*.tf"))


def _unquote(value):
    return value.strip('"') if isinstance(value, str) else value


@pytest.mark.parametrize("path", MANIFESTS, ids=[str(p.relative_to(INFRA)) for p in MANIFESTS])
def test_manifest_validates_against_kubernetes_schemas(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kustomizations_list_files_that_exist():
    for kustomization in (INFRA / "k8s").rglob("kustomization.yaml"):
        doc = yaml.safe_load(kustomization.read_text())
        for resource in doc["resources"]:
            assert (kustomization.parent / resource).is_file(), f"{kustomization}: {resource} missing"


def test_airflow_helm_values_use_the_kubernetes_executor_and_the_cluster_runner():
    values = yaml.safe_load((INFRA / "helm" / "airflow-values.yaml").read_text())
    assert values["executor"] == "KubernetesExecutor"
    env = {e["name"]: e["value"] for e in values["env"]}
    assert env["OMNISTAGE_RUNNER"] == "kubernetes" and env["MLFLOW_TRACKING_URI"].startswith("http://mlflow.")


def _node_pools():
    pools = {}
    for path in TERRAFORM:
        for block in hcl2.load(path.open())["resource"]:
            for resources in block.values():
                for name, body in resources.items():
                    config = body.get("node_config", [body])[0]
                    labels = {_unquote(k): _unquote(v) for k, v in config.get("labels", {}).items()}
                    taints = [{k: _unquote(v) for k, v in t.items()} for t in config.get("taint", [])]
                    pools[(path.parent.name, _unquote(name))] = {"labels": labels, "taints": taints}
    return pools


def test_terraform_pools_match_the_pipelines_node_selectors_and_tolerations(tmp_path):
    pools = _node_pools()
    assert {cloud for cloud, _ in pools} == {"gke", "eks"}
    curriculum_path = REPO_ROOT / "data_specs" / "curriculum" / "longcat_omni.yaml"
    docs = list(yaml.safe_load_all(compile_pipeline(curriculum_path, tmp_path / "p.yaml").read_text()))
    executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    selected = {e["nodeSelector"]["labels"][POOL_LABEL] for e in executors.values() if "nodeSelector" in e}
    gpu_stages = {
        s.resources.node_pool for s in CurriculumSpec.load(curriculum_path).stages if s.resources.gpus_per_node
    }
    assert gpu_stages <= selected
    for cloud in ("gke", "eks"):
        labelled = {p["labels"].get(POOL_LABEL): p for (c, _), p in pools.items() if c == cloud}
        for pool in selected:
            assert pool in labelled, f"{cloud}: no node pool labelled {POOL_LABEL}={pool}"
        for pool in gpu_stages:
            taints = labelled[pool]["taints"]
            assert any(t["key"] == GPU_TAINT and t["effect"] == "NO_SCHEDULE" for t in taints), (cloud, pool)
    for executor in executors.values():  # GPU tasks tolerate exactly that taint
        for toleration in executor.get("tolerations", []):
            assert toleration["key"] == GPU_TAINT and toleration["effect"] == "NoSchedule"


@pytest.mark.parametrize("dockerfile", sorted((INFRA / "docker").glob("*.Dockerfile")), ids=lambda p: p.name)
def test_dockerfiles_copy_files_that_exist(dockerfile):
    copies = re.findall(r"^COPY\s+(.+?)\s+\S+$", dockerfile.read_text(), flags=re.MULTILINE)
    assert copies
    for sources in copies:
        for source in sources.split():
            assert (REPO_ROOT / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"
    assert "pip install ." in dockerfile.read_text()  # the project itself is installed
