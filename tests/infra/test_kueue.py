"""The Kueue queues in infra/k8s/kueue/: valid for Kueue v0.19's v1beta2 CRD schemas (test data in
tests/infra/kueue/, closed to unknown fields), wired together (LocalQueue -> ClusterQueue -> ResourceFlavor), in
the TrainJobs' namespace, on the GPU pool's labels, and with quota that admits every full-size stage's TrainJob
with either network profile. Static: no Kueue controller or API server runs here."""

import functools
import gzip
import json
import re

import jsonschema
import pytest
import yaml

from components.pipelines.cluster import node_selector
from components.pipelines.trainjob import KUEUE_QUEUE_LABEL, build_trainjob
from components.specs.curriculum import CurriculumSpec
from tests.conftest import REPO_ROOT
from tests.infra.rayjob_schema import strict_schema

QUEUES = REPO_ROOT / "infra" / "k8s" / "kueue" / "gpu-h100-queues.yaml"
SCHEMAS = REPO_ROOT / "tests" / "infra" / "kueue" / "kueue-v1beta2-openapi-schemas.json.gz"
FULL_PATH = REPO_ROOT / "data_specs" / "curriculum" / "longcat_omni.yaml"
_UNITS = {"": 1, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


@functools.cache
def _validators() -> dict[str, jsonschema.Draft7Validator]:
    schemas = json.loads(gzip.decompress(SCHEMAS.read_bytes()))
    return {kind: jsonschema.Draft7Validator(strict_schema(schema)) for kind, schema in schemas.items()}


def _errors(doc: dict) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in _validators()[doc["kind"]].iter_errors(doc)]


def _docs() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(QUEUES.read_text())}


def _amount(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi|Ti)?", str(quantity)).groups()
    return int(number) * _UNITS[unit or ""]


def test_the_queues_validate_against_kueues_crd_schemas():
    docs = _docs()
    assert set(docs) == {"ResourceFlavor", "ClusterQueue", "LocalQueue"}
    for doc in docs.values():
        assert doc["apiVersion"] == "kueue.x-k8s.io/v1beta2"
        assert _errors(doc) == [], doc["kind"]


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d["ClusterQueue"]["spec"].update(queueingStrategy="Fastest"),  # not in the enum
        lambda d: d["ClusterQueue"]["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0].pop("nominalQuota"),
        lambda d: d["LocalQueue"]["spec"].update(clusterQueues="omnistage-gpu-h100"),  # misspelt
        lambda d: d["ResourceFlavor"]["spec"].update(nodeLabels=["omnistage.io/pool=gpu-h100"]),  # wrong type
    ],
    ids=["enum", "required", "unknown-field", "type"],
)
def test_the_schema_check_rejects_broken_queues(breakage):
    docs = _docs()
    breakage(docs)
    assert any(_errors(doc) for doc in docs.values())


def test_local_queue_cluster_queue_and_flavor_are_wired_to_the_gpu_pool_and_the_trainjob_namespace():
    docs = _docs()
    local, cluster, flavor = docs["LocalQueue"], docs["ClusterQueue"], docs["ResourceFlavor"]
    assert local["spec"]["clusterQueue"] == cluster["metadata"]["name"]
    (group,) = cluster["spec"]["resourceGroups"]
    assert [f["name"] for f in group["flavors"]] == [flavor["metadata"]["name"]]
    rbac = next(yaml.safe_load_all((REPO_ROOT / "infra" / "k8s" / "trainer" / "launcher-rbac.yaml").read_text()))
    assert local["metadata"]["namespace"] == rbac["metadata"]["namespace"]
    full = CurriculumSpec.load(FULL_PATH)
    for stage in full.stages:  # Kueue adds the flavor's labels to admitted pods: they must be the ones selected
        assert flavor["spec"]["nodeLabels"] == node_selector(stage.resources)


@pytest.mark.parametrize("network", ["none", "efa"])
def test_every_full_size_stage_named_to_the_queue_is_admissible(tmp_path, network):
    docs = _docs()
    queue = docs["LocalQueue"]["metadata"]["name"]
    doc = yaml.safe_load(FULL_PATH.read_text())
    doc["cluster"] = {"queue": queue, "network": network}
    path = tmp_path / "queued.yaml"
    path.write_text(yaml.safe_dump(doc))
    curriculum = CurriculumSpec.load(path)
    (group,) = docs["ClusterQueue"]["spec"]["resourceGroups"]
    (flavor,) = group["flavors"]
    quota = {r["name"]: _amount(r["nominalQuota"]) for r in flavor["resources"]}
    assert set(quota) == set(group["coveredResources"])
    for stage in curriculum.stages:
        job = build_trainjob(curriculum, path, stage.name, "run-1")
        assert job["metadata"]["labels"][KUEUE_QUEUE_LABEL] == queue and job["spec"]["suspend"] is True
        trainer = job["spec"]["trainer"]
        per_node = trainer["resourcesPerNode"]["requests"]
        # A resource the ClusterQueue does not cover makes the workload inadmissible, and a gang larger than
        # the quota waits forever.
        assert set(per_node) <= set(group["coveredResources"]), (stage.name, set(per_node) - set(quota))
        for name, amount in per_node.items():
            assert trainer["numNodes"] * _amount(amount) <= quota[name], (stage.name, name)
