"""The curriculum pipeline: compiled YAML carries each stage's GPU settings; kfp.local runs it end to end."""

import mlflow
import pytest
import yaml

from components.pipelines.curriculum_pipeline import GPU_TAINT, POOL_LABEL, compile_pipeline, run_locally
from components.specs.curriculum import CurriculumSpec
from tests.conftest import REPO_ROOT

FULL = REPO_ROOT / "data_specs" / "curriculum" / "longcat_omni.yaml"


def test_compiled_pipeline_carries_gpu_node_pool_and_toleration_per_stage(tmp_path):
    out = compile_pipeline(FULL, tmp_path / "pipeline.yaml")
    docs = list(yaml.safe_load_all(out.read_text()))
    spec, platform = docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    curriculum = CurriculumSpec.load(FULL)
    tasks = spec["root"]["dag"]["tasks"]
    stage_tasks = {t["taskInfo"]["name"]: t for t in tasks.values() if t["taskInfo"]["name"] != "start-curriculum-run"}
    assert sorted(stage_tasks) == sorted(s.name for s in curriculum.stages)
    executors = spec["deploymentSpec"]["executors"]
    for stage in curriculum.stages:
        task = stage_tasks[stage.name]
        executor = task["componentRef"]["name"].replace("comp-", "exec-")
        resources = executors[executor]["container"]["resources"]
        assert resources["accelerator"]["resourceType"] == stage.resources.accelerator
        assert int(resources["accelerator"]["resourceCount"]) == stage.resources.gpus_per_node
        k8s = platform[executor]
        assert k8s["nodeSelector"]["labels"] == {POOL_LABEL: stage.resources.node_pool}
        assert {"key": GPU_TAINT, "operator": "Exists", "effect": "NoSchedule"} in k8s["tolerations"]
        assert k8s["secretAsEnv"][0]["secretName"] == "omnistage-mlflow"
        assert k8s["pvcMount"][0]["mountPath"] == curriculum.checkpoint_storage.mount_path
    name_of = {task_id: t["taskInfo"]["name"] for task_id, t in tasks.items()}
    order = [s.name for s in curriculum.stages]
    for earlier, later in zip(order, order[1:]):  # checkpoints chain stage to stage
        artifact = stage_tasks[later]["inputs"]["artifacts"]["previous"]["taskOutputArtifact"]
        assert name_of[artifact["producerTask"]] == earlier and artifact["outputArtifactKey"] == "checkpoint"


@pytest.mark.slow
def test_tiny_curriculum_runs_through_kfp_local(tiny_dataset, tmp_path):
    data = tiny_dataset
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_locally(REPO_ROOT / "data_specs" / "curriculum" / "tiny.yaml", {"demo": data}, data / "tokenizer.json", uri,
                tmp_path / "root", max_steps=2)  # fmt: skip
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("omnistage-curriculum")
    runs = client.search_runs([experiment.experiment_id])
    stages = {r.data.tags.get("omnistage.stage") for r in runs} - {None}
    assert stages == {s.name for s in CurriculumSpec.load(REPO_ROOT / "data_specs" / "curriculum" / "tiny.yaml").stages}
    parents = {r.data.tags.get("mlflow.parentRunId") for r in runs if r.data.tags.get("omnistage.stage")}
    assert len(parents) == 1 and None not in parents  # every stage under one curriculum run
    checkpoints = list((tmp_path / "root").rglob("checkpoint/meta.json"))
    assert len(checkpoints) == len(stages)


@pytest.mark.slow
def test_checkpoints_on_a_mounted_volume_chain_through_pointer_artifacts(tiny_dataset, tmp_path, monkeypatch):
    import json

    from components.pipelines.stage_entry import POINTER, run_stage_step

    monkeypatch.setenv("OMNISTAGE_CHECKPOINT_ROOT", str(tmp_path / "pvc"))
    curriculum = str(REPO_ROOT / "data_specs" / "curriculum" / "tiny.yaml")
    common = dict(datasets=json.dumps({"demo": str(tiny_dataset)}), tokenizer=str(tiny_dataset / "tokenizer.json"),
                  tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", parent_run_id="offline", max_steps=1)  # fmt: skip
    run_stage_step(curriculum, "stage0-text", out=str(tmp_path / "a0" / "checkpoint"), **common)
    pointer = tmp_path / "a0" / "checkpoint" / POINTER
    assert pointer.is_file() and pointer.read_text().startswith(str(tmp_path / "pvc"))
    result = run_stage_step(curriculum, "stage1-text-speech", out=str(tmp_path / "a1" / "checkpoint"),
                            init_from=str(tmp_path / "a0" / "checkpoint"), **common)  # fmt: skip
    assert result["steps"] == 1
    assert len(list((tmp_path / "pvc").rglob("checkpoint/meta.json"))) == 2
