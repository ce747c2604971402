"""The curriculum pipeline: what the compiled YAML asks of a cluster (a pod per one-node stage with
`nvidia.com/gpu` on its GPU pool, a CPU launcher per multi-node stage), the gate tail, and checkpoints on a
volume chaining stage to stage."""

import pytest
import yaml

from components.pipelines.cluster import ACCELERATOR_LABEL, GPU_RESOURCE, GPU_TAINT, MLFLOW_SECRET, POOL_LABEL
from components.pipelines.curriculum_pipeline import compile_pipeline
from components.pipelines.stage_components import CPU_IMAGE
from components.specs.curriculum import CurriculumSpec
from tests.conftest import REPO_ROOT, mlflow_db_copy

FULL = REPO_ROOT / "data_specs" / "curriculum" / "longcat_omni.yaml"


def _compiled(curriculum_path, out):
    docs = list(yaml.safe_load_all(compile_pipeline(curriculum_path, out).read_text()))
    spec, platform = docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    tasks = spec["root"]["dag"]["tasks"]
    stage_tasks = {t["taskInfo"]["name"]: t for t in tasks.values() if t["taskInfo"]["name"] != "start-curriculum-run"}
    executor_of = {name: t["componentRef"]["name"].replace("comp-", "exec-") for name, t in stage_tasks.items()}
    return spec, platform, tasks, stage_tasks, executor_of


def _one_node_first_stage(tmp_path):
    """The full recipe with stage0 on one GPU (parallel plan shrunk to fit): a plain GPU task. (One node of 8
    GPUs is 8 processes: a one-node TrainJob.)"""
    doc = yaml.safe_load(FULL.read_text())
    doc["stages"][0]["resources"].update(nodes=1, gpus_per_node=1)
    doc["stages"][0]["parallel"] = {}
    path = tmp_path / "one_node_stage0.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_multi_node_stages_compile_to_cpu_launchers_chained_by_checkpoints(tmp_path):
    spec, platform, tasks, stage_tasks, executor_of = _compiled(FULL, tmp_path / "pipeline.yaml")
    curriculum = CurriculumSpec.load(FULL)
    assert sorted(stage_tasks) == sorted(s.name for s in curriculum.stages)
    executors = spec["deploymentSpec"]["executors"]
    for stage in curriculum.stages:
        task, executor = stage_tasks[stage.name], executor_of[stage.name]
        assert task["componentRef"]["name"].startswith("comp-launch-stage")
        assert task["inputs"]["parameters"]["submitter"]["runtimeValue"]["constant"] == "trainjob"
        container = executors[executor]["container"]
        assert "accelerator" not in container["resources"]  # the TrainJob requests the GPUs, not this pod
        assert container["image"] == CPU_IMAGE
        assert platform[executor] == {"nodeSelector": {"labels": {POOL_LABEL: curriculum.cluster.launcher_pool}}}
        # The KFP run id names the TrainJob, so a retried launcher task finds the job it created.
        assert task["inputs"]["parameters"]["run_name"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    name_of = {task_id: t["taskInfo"]["name"] for task_id, t in tasks.items()}
    order = [s.name for s in curriculum.stages]
    assert "previous" not in stage_tasks[order[0]]["inputs"].get("artifacts", {})
    for earlier, later in zip(order, order[1:]):  # checkpoints chain stage to stage
        artifact = stage_tasks[later]["inputs"]["artifacts"]["previous"]["taskOutputArtifact"]
        assert name_of[artifact["producerTask"]] == earlier and artifact["outputArtifactKey"] == "checkpoint"


def test_a_one_gpu_stage_is_one_pod_with_nvidia_gpu_its_pool_model_taint_and_deadline(tmp_path):
    path = _one_node_first_stage(tmp_path)
    spec, platform, _, stage_tasks, executor_of = _compiled(path, tmp_path / "pipeline.yaml")
    stage = CurriculumSpec.load(path).stages[0]
    res, executor = stage.resources, executor_of[stage.name]
    resources = spec["deploymentSpec"]["executors"][executor]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == GPU_RESOURCE
    assert int(resources["accelerator"]["resourceCount"]) == res.gpus_per_node
    assert (resources["resourceCpuLimit"], resources["resourceMemoryLimit"]) == (res.cpu, res.memory)
    k8s = platform[executor]
    assert k8s["nodeSelector"]["labels"] == {POOL_LABEL: res.node_pool, ACCELERATOR_LABEL: res.accelerator}
    assert k8s["tolerations"] == [{"key": GPU_TAINT, "operator": "Exists", "effect": "NoSchedule"}]
    assert int(k8s["activeDeadlineSeconds"]) == res.max_duration_hours * 3600
    assert k8s["secretAsEnv"][0]["secretName"] == MLFLOW_SECRET
    assert k8s["pvcMount"][0]["mountPath"] == CurriculumSpec.load(path).checkpoint_storage.mount_path
    assert stage_tasks[stage.name]["componentRef"]["name"] == "comp-train-first-stage"
    later = stage_tasks[CurriculumSpec.load(path).stages[1].name]  # a launcher reads a GPU task's checkpoint
    assert later["inputs"]["artifacts"]["previous"]["taskOutputArtifact"]["outputArtifactKey"] == "checkpoint"


@pytest.mark.parametrize("variant", ["full", "one-node-stage0"])
def test_compiled_pipeline_requests_only_nvidia_gpu_and_only_on_gpu_pools(tmp_path, variant):
    path = FULL if variant == "full" else _one_node_first_stage(tmp_path)
    out = tmp_path / "pipeline.yaml"
    spec, platform, *_ = _compiled(path, out)
    curriculum = CurriculumSpec.load(path)
    gpu_pools = {s.resources.node_pool for s in curriculum.stages if s.resources.gpus_per_node}
    models = {s.resources.accelerator for s in curriculum.stages if s.resources.gpus_per_node}
    requesting = set()
    for name, executor in spec["deploymentSpec"]["executors"].items():
        accelerator = executor["container"].get("resources", {}).get("accelerator")
        selector = platform.get(name, {}).get("nodeSelector", {}).get("labels", {})
        if accelerator:
            requesting.add(name)
            assert accelerator["resourceType"] == accelerator["type"] == GPU_RESOURCE, name
            assert selector.get(POOL_LABEL) in gpu_pools and selector.get(ACCELERATOR_LABEL) in models, name
        else:
            assert selector.get(POOL_LABEL) not in gpu_pools, name  # CPU pods stay off GPU nodes
            assert not platform.get(name, {}).get("tolerations"), name
    assert len(requesting) == (0 if variant == "full" else 1)
    # A GPU model appears only as a node-selector value, never as a resource name.
    text = out.read_text()
    for model in models:
        assert text.count(model) == len(requesting), model


def test_pipeline_with_a_gate_ends_in_evaluate_gate_and_a_conditional_promote(tmp_path):
    gate = REPO_ROOT / "data_specs" / "gates" / "default.yaml"
    spec, platform_doc = yaml.safe_load_all(compile_pipeline(FULL, tmp_path / "gated.yaml", gate).read_text())
    tasks = spec["root"]["dag"]["tasks"]
    # Every task that talks to MLflow gets the Secret's credentials (an authenticating server refuses the rest).
    platform = platform_doc["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for executor in ("start-curriculum-run", "evaluate-candidate", "judge-gate", "promote-champion"):
        secret = platform[f"exec-{executor}"]["secretAsEnv"][0]
        assert secret["secretName"] == MLFLOW_SECRET and secret["optional"], executor
    producer = tasks["evaluate-candidate"]["inputs"]["artifacts"]["checkpoint"]["taskOutputArtifact"]["producerTask"]
    assert tasks[producer]["taskInfo"]["name"] == CurriculumSpec.load(FULL).stages[-1].name  # the final checkpoint
    assert tasks["judge-gate"]["dependentTasks"] == ["evaluate-candidate"]
    condition = next(t for name, t in tasks.items() if name.startswith("condition"))
    assert "promoted" in condition["triggerPolicy"]["condition"]
    inner = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    assert list(inner) == ["promote-champion"]


@pytest.mark.slow
def test_checkpoints_on_a_mounted_volume_chain_through_pointer_artifacts(tiny_dataset, tmp_path, monkeypatch,
                                                                         migrated_mlflow_db):  # fmt: skip
    import json

    from components.pipelines.stage_entry import POINTER, run_stage_step

    monkeypatch.setenv("OMNISTAGE_CHECKPOINT_ROOT", str(tmp_path / "pvc"))
    curriculum = str(REPO_ROOT / "data_specs" / "curriculum" / "tiny.yaml")
    tracking = mlflow_db_copy(migrated_mlflow_db, tmp_path / "mlflow.db")
    common = dict(datasets=json.dumps({"demo": str(tiny_dataset)}), tokenizer=str(tiny_dataset / "tokenizer.json"),
                  tracking_uri=tracking, parent_run_id="offline", max_steps=1)  # fmt: skip
    run_stage_step(curriculum, "stage0-text", out=str(tmp_path / "a0" / "checkpoint"), **common)
    pointer = tmp_path / "a0" / "checkpoint" / POINTER
    assert pointer.is_file() and pointer.read_text().startswith(str(tmp_path / "pvc"))
    result = run_stage_step(curriculum, "stage1-text-speech", out=str(tmp_path / "a1" / "checkpoint"),
                            init_from=str(tmp_path / "a0" / "checkpoint"), **common)  # fmt: skip
    assert result["steps"] == 1
    assert len(list((tmp_path / "pvc").rglob("checkpoint/meta.json"))) == 2
    # MLflow references the checkpoints on the volume: each run's only artifact is the pointer file.
    from mlflow import MlflowClient

    tags = MlflowClient(common["tracking_uri"]).get_run(result["run_id"]).data.tags
    assert tags["omnistage.checkpoint_storage"] == "reference"
    artifacts = [p for p in (tmp_path / "mlartifacts").rglob("*") if p.is_file()]
    assert sorted(p.name for p in artifacts) == ["checkpoint.uri", "checkpoint.uri"], artifacts


def test_compiled_tasks_carry_the_curriculums_object_storage_and_launchers_are_retried(tmp_path):
    path = _one_node_first_stage(tmp_path)  # a GPU task, launchers and (with the gate) evaluate
    gate = REPO_ROOT / "data_specs" / "gates" / "default.yaml"
    spec, platform_doc = yaml.safe_load_all(compile_pipeline(path, tmp_path / "p.yaml", gate).read_text())
    platform = platform_doc["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    curriculum = CurriculumSpec.load(path)
    cluster = curriculum.cluster
    wanted = {"OMNISTAGE_CHECKPOINT_URI": cluster.checkpoint_uri, "OMNISTAGE_DVC_REMOTE": cluster.dvc_remote}
    assert all(wanted.values())  # the shipped recipe names its buckets
    tasks = spec["root"]["dag"]["tasks"]
    stages = {t["taskInfo"]["name"]: t for t in tasks.values() if t["taskInfo"]["name"] in
              {s.name for s in curriculum.stages}}  # fmt: skip
    assert len(stages) == len(curriculum.stages)
    for name, task in [*stages.items(), ("evaluate-candidate", tasks["evaluate-candidate"])]:
        executor = task["componentRef"]["name"].replace("comp-", "exec-")
        env = {e["name"]: e["value"] for e in spec["deploymentSpec"]["executors"][executor]["container"].get("env", [])}
        assert env.items() >= wanted.items(), name
        secrets = [s["secretName"] for s in platform[executor].get("secretAsEnv", [])]
        launcher = task["componentRef"]["name"].startswith("comp-launch-stage")
        assert ("omnistage-s3" in secrets) != launcher, name  # a launcher only passes the settings on
        if not launcher:
            assert "retryPolicy" not in task, name
            continue
        stage = curriculum.stage(name)
        retry = task["retryPolicy"]
        assert retry["maxRetryCount"] == cluster.launcher_retries > 0
        # Argo's maxDuration counts from the first attempt: every attempt may wait for admission and the deadline.
        attempt_s = cluster.admission_timeout_s + stage.resources.max_duration_hours * 3600
        assert int(retry["backoffMaxDuration"].removesuffix("s")) >= (cluster.launcher_retries + 1) * attempt_s
    for executor in ("exec-start-curriculum-run", "exec-judge-gate"):  # no checkpoint or dataset to reach
        assert "env" not in spec["deploymentSpec"]["executors"][executor]["container"], executor


def test_a_curriculum_with_a_volume_as_checkpoint_uri_does_not_compile(tmp_path):
    from components.specs.loading import SpecError

    doc = yaml.safe_load(FULL.read_text())
    doc["cluster"]["checkpoint_uri"] = "/mnt/checkpoints"
    path = tmp_path / "volume_uri.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError, match=r"field 'cluster.checkpoint_uri'.*must be an object-store URI"):
        compile_pipeline(path, tmp_path / "p.yaml")
