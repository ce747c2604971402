"""The curriculum pipeline: compiled YAML carries each stage's GPU settings; kfp.local runs it end to end."""

import pytest
import yaml

from components.pipelines.curriculum_pipeline import GPU_TAINT, POOL_LABEL, compile_pipeline
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


def test_pipeline_with_a_gate_ends_in_evaluate_gate_and_a_conditional_promote(tmp_path):
    gate = REPO_ROOT / "data_specs" / "gates" / "default.yaml"
    spec = next(yaml.safe_load_all(compile_pipeline(FULL, tmp_path / "gated.yaml", gate).read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    producer = tasks["evaluate-candidate"]["inputs"]["artifacts"]["checkpoint"]["taskOutputArtifact"]["producerTask"]
    assert tasks[producer]["taskInfo"]["name"] == CurriculumSpec.load(FULL).stages[-1].name  # the final checkpoint
    assert tasks["judge-gate"]["dependentTasks"] == ["evaluate-candidate"]
    condition = next(t for name, t in tasks.items() if name.startswith("condition"))
    assert "promoted" in condition["triggerPolicy"]["condition"]
    inner = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    assert list(inner) == ["promote-champion"]


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
