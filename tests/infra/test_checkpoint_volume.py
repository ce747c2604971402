"""The checkpoint volume (infra/k8s/checkpoints/): the claim the curriculum and the Trainer runtime name,
ReadWriteMany, in the TrainJobs' namespace, sized for a full run's checkpoints, and a StorageClass of that
name per cloud. Static: no API server or CSI driver provisions it here."""

import re

import yaml

from components.specs.curriculum import CurriculumSpec
from tests.conftest import REPO_ROOT
from tests.infra.trainer_manifests import load_runtime

CHECKPOINTS = REPO_ROOT / "infra" / "k8s" / "checkpoints"
FULL = CurriculumSpec.load(REPO_ROOT / "data_specs" / "curriculum" / "longcat_omni.yaml")
FULL_STAGE_CHECKPOINT_TB = 1.1  # bf16 weights + optimizer state of the full-size model (issue 10)
_BINARY = {"Gi": 2**30, "Ti": 2**40}


def _load(path) -> dict:
    return yaml.safe_load(path.read_text())


def _bytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Gi|Ti)", quantity).groups()
    return int(number) * _BINARY[unit]


def test_the_claim_is_the_curriculums_and_the_runtimes_read_write_many_in_the_trainjob_namespace():
    pvc = _load(CHECKPOINTS / "checkpoints-pvc.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim"
    assert pvc["metadata"]["name"] == FULL.checkpoint_storage.pvc
    (job,) = load_runtime()["spec"]["template"]["spec"]["replicatedJobs"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in job["template"]["spec"]["template"]["spec"]["volumes"]
              if "persistentVolumeClaim" in v]  # fmt: skip
    assert claims == [pvc["metadata"]["name"]]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # every node writes its shards of one save
    rbac = next(yaml.safe_load_all((REPO_ROOT / "infra" / "k8s" / "trainer" / "launcher-rbac.yaml").read_text()))
    assert pvc["metadata"]["namespace"] == rbac["metadata"]["namespace"]  # a pod mounts claims of its namespace


def test_the_claim_holds_every_stage_checkpoint_of_a_run_plus_one_save_in_flight():
    pvc = _load(CHECKPOINTS / "checkpoints-pvc.yaml")
    needed = (len(FULL.stages) + 1) * FULL_STAGE_CHECKPOINT_TB * 1e12
    assert _bytes(pvc["spec"]["resources"]["requests"]["storage"]) >= needed


def test_each_cloud_overlay_adds_the_storage_class_the_claim_names():
    pvc = _load(CHECKPOINTS / "checkpoints-pvc.yaml")
    provisioners = {}
    for cloud in ("gke", "eks"):
        kustomization = _load(CHECKPOINTS / cloud / "kustomization.yaml")
        assert ".." in kustomization["resources"]  # the claim itself comes from the base
        (storage_class,) = [_load(CHECKPOINTS / cloud / r) for r in kustomization["resources"] if r != ".."]
        assert storage_class["kind"] == "StorageClass"
        assert storage_class["metadata"]["name"] == pvc["spec"]["storageClassName"]
        assert storage_class["reclaimPolicy"] == "Retain"  # deleting the claim keeps trained checkpoints
        provisioners[cloud] = storage_class["provisioner"]
    assert provisioners == {"gke": "filestore.csi.storage.gke.io", "eks": "fsx.csi.aws.com"}
