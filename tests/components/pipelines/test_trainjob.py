"""The TrainJob of a multi-node stage: valid for the Trainer API (kubeflow-trainer-api models) and, as the pod
each node gets on the shipped runtime, for Kubernetes 1.30; its numbers are the curriculum's; its name is
deterministic and fits JobSet's pod names; what it cannot honour it refuses with the file, stage and field.

No Kubernetes API server runs here: nothing is created on a cluster.
"""

import os
import re
import subprocess
import sys

import kubernetes_validate
import pydantic
import pytest
import yaml

from components.pipelines.cluster import ACCELERATOR_LABEL, GPU_RESOURCE, GPU_TAINT, POOL_LABEL
from components.pipelines.network import EFA_INTERFACES_P5, EFA_RESOURCE, network_profile
from components.pipelines.trainjob import KUEUE_QUEUE_LABEL, StageInputs, TrainJobError, build_trainjob, trainjob_name
from components.specs.curriculum import CurriculumSpec
from components.specs.loading import SpecError
from tests.conftest import REPO_ROOT
from tests.infra.trainer_manifests import (
    TORCHRUN_ENV,
    load_runtime,
    trainjob_node_pod,
    validate_pod,
    validate_trainer_manifest,
)

FULL_PATH = REPO_ROOT / "data_specs" / "curriculum" / "longcat_omni.yaml"
FULL = CurriculumSpec.load(FULL_PATH)
MULTI_NODE = [s.name for s in FULL.stages if s.resources.nodes > 1]
RFC1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def test_the_full_recipe_has_multi_node_stages():
    assert len(MULTI_NODE) == len(FULL.stages) == 9  # every full-size stage runs on 32-64 nodes


@pytest.mark.parametrize("stage_name", MULTI_NODE)
def test_trainjob_of_every_multi_node_stage_validates_and_carries_the_curriculum(stage_name):
    stage = FULL.stage(stage_name)
    res, storage = stage.resources, FULL.checkpoint_storage
    job = build_trainjob(FULL, FULL_PATH, stage_name, run_name="run-1")
    validate_trainer_manifest(job)
    runtime = load_runtime()
    assert job["spec"]["runtimeRef"]["name"] == runtime["metadata"]["name"]
    pod = trainjob_node_pod(runtime, job)
    validate_pod(pod, f"{job['metadata']['name']}-node-0-0-abcde")

    trainer = job["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (res.nodes, res.gpus_per_node)
    per_node = {GPU_RESOURCE: str(res.gpus_per_node), "cpu": res.cpu, "memory": res.memory}
    assert trainer["resourcesPerNode"] == {"requests": per_node, "limits": per_node}
    # The world the nodes make is the one the parallel plan needs: TP x PP x CP x DP, with EP x TP (Megatron's
    # expert tensor parallel defaults to TP) inside the TP x CP x DP ranks of a pipeline stage.
    p = stage.parallel
    world = trainer["numNodes"] * trainer["numProcPerNode"]
    data_parallel = world // (p.tensor * p.pipeline * p.context)
    assert p.tensor * p.pipeline * p.context * data_parallel == world
    assert (p.tensor * p.context * data_parallel) % (p.expert * p.tensor) == 0
    assert job["spec"]["activeDeadlineSeconds"] == res.max_duration_hours * 3600

    assert pod["nodeSelector"] == {POOL_LABEL: res.node_pool, ACCELERATOR_LABEL: res.accelerator}
    assert pod["tolerations"] == [{"key": GPU_TAINT, "operator": "Exists", "effect": "NoSchedule"}]
    (node,) = pod["containers"]
    assert _claim_mounted_at(pod, storage.mount_path) == storage.pvc
    assert not {e["name"] for e in node["env"]} & set(TORCHRUN_ENV)  # Trainer rejects these in trainer.env

    command = trainer["command"]
    assert command[:2] == ["omnistage", "train"]
    assert command[-3:] == ["--resume", "--nproc-per-node", str(res.gpus_per_node)]
    assert command[command.index("--stage") + 1] == stage_name
    assert command[command.index("--curriculum") + 1] == "data_specs/curriculum/longcat_omni.yaml"  # in the image
    out = command[command.index("--out") + 1]
    assert out == f"{storage.mount_path}/{FULL.name}/run-1/{stage_name}"
    if stage.init_from:  # the previous stage of the same run, on the same volume
        assert command[command.index("--init-from") + 1] == out.replace(stage_name, stage.init_from)
    else:
        assert "--init-from" not in command
    assert KUEUE_QUEUE_LABEL not in job["metadata"].get("labels", {}) and "suspend" not in job["spec"]


def _claim_mounted_at(pod: dict, mount_path: str) -> str:
    (node,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert {m["name"] for m in node["volumeMounts"]} == set(volumes)  # every volume is mounted, none is missing
    (mount,) = [m for m in node["volumeMounts"] if m["mountPath"] == mount_path]
    return volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]


def test_the_curriculums_checkpoint_claim_replaces_the_runtimes(tmp_path):
    storage = {"pvc": "team-b-checkpoints", "mount_path": "/ckpt"}
    curriculum, path = _curriculum(tmp_path, lambda d: d.update(checkpoint_storage=storage))
    job = build_trainjob(curriculum, path, "stage0-text", "run-1")
    pod = trainjob_node_pod(load_runtime(), job)
    validate_pod(pod, "claim")
    assert _claim_mounted_at(pod, "/ckpt") == "team-b-checkpoints"
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"team-b-checkpoints"}  # the runtime's default claim is not mounted as well
    out = job["spec"]["trainer"]["command"][job["spec"]["trainer"]["command"].index("--out") + 1]
    assert out.startswith("/ckpt/")


def test_launcher_inputs_reach_the_command_and_env():
    inputs = StageInputs(datasets={"text_corpus": "/data/text", "extra": "/data/x"}, tokenizer="/data/tok.json",
                         init_from="/ckpt/prev", tracking_uri="http://mlflow:5000", max_steps=20,
                         parent_run_id="abc123")  # fmt: skip
    job = build_trainjob(FULL, FULL_PATH, "stage0-text", "run-1", inputs)
    validate_trainer_manifest(job)
    command = job["spec"]["trainer"]["command"]
    assert "text_corpus=/data/text" in command and "extra=/data/x" in command
    assert command[command.index("--tokenizer") + 1] == "/data/tok.json"
    assert command[command.index("--init-from") + 1] == "/ckpt/prev"
    assert command[command.index("--max-steps") + 1] == "20"
    # rank 0 tracks the stage as a child of the curriculum's run, as a one-process stage's task does
    assert command[command.index("--tracking-uri") + 1] == "http://mlflow:5000"
    assert command[command.index("--parent-run-id") + 1] == "abc123"
    assert job["spec"]["trainer"]["env"] == [{"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"}]


def test_object_storage_inputs_reach_every_node_as_versions_uris_and_env():
    version = "3f2a0000000000000000000000000c1a.dir"
    inputs = StageInputs(datasets={"text_corpus": f"text@{version}"}, tokenizer="s3://b/tok/tokenizer.json",
                         init_from="s3://b/ckpt/longcat-omni/run-1/stage0-text/checkpoint",
                         checkpoint_uri="s3://b/ckpt/longcat-omni/run-1/stage1-text-speech/checkpoint",
                         dvc_remote="s3://b/dvc", s3_endpoint="https://minio.internal:9000")  # fmt: skip
    job = build_trainjob(FULL, FULL_PATH, "stage0-text", "run-1", inputs)
    validate_trainer_manifest(job)
    pod = trainjob_node_pod(load_runtime(), job)
    validate_pod(pod, "node")
    command = job["spec"]["trainer"]["command"]
    assert command[command.index("--dataset") + 1] == f"text_corpus=text@{version}"  # the node restores it
    assert command[command.index("--tokenizer") + 1] == "s3://b/tok/tokenizer.json"
    assert command[command.index("--init-from") + 1] == inputs.init_from
    assert command[command.index("--checkpoint-uri") + 1] == inputs.checkpoint_uri
    (node,) = pod["containers"]
    env = {e["name"]: e.get("value") or e["valueFrom"]["secretKeyRef"] for e in node["env"]}
    assert env["OMNISTAGE_DVC_REMOTE"] == "s3://b/dvc" and env["AWS_ENDPOINT_URL"] == "https://minio.internal:9000"
    for name, key in (("AWS_ACCESS_KEY_ID", "access_key_id"), ("AWS_SECRET_ACCESS_KEY", "secret_access_key")):
        assert env[name] == {"name": "omnistage-s3", "key": key, "optional": True}  # from the shipped runtime
    with pytest.raises(TrainJobError, match=r"dataset\(s\) \['text_corpus'\] given by URI.*NAME@VERSION"):
        build_trainjob(FULL, FULL_PATH, "stage0-text", "run-1",
                       StageInputs(datasets={"text_corpus": "s3://b/datasets/text"}, tokenizer="/t.json"))  # fmt: skip


def test_a_one_node_stage_of_several_cpu_processes_is_a_one_node_trainjob_without_gpus(tmp_path):
    doc = yaml.safe_load((REPO_ROOT / "data_specs" / "curriculum" / "tiny.yaml").read_text())
    doc["checkpoint_storage"] = {"pvc": "checkpoints"}
    doc["stages"][0].update(global_batch_size=2)
    doc["stages"][0]["resources"].update(processes_per_node=2, max_duration_hours=1)
    path = tmp_path / "tiny_2proc.yaml"
    path.write_text(yaml.safe_dump(doc))
    job = build_trainjob(CurriculumSpec.load(path), path, "stage0-text", "run-1")
    validate_trainer_manifest(job)
    validate_pod(trainjob_node_pod(load_runtime(), job), "cpu")
    trainer = job["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (1, 2)
    assert trainer["resourcesPerNode"]["limits"] == {"cpu": "2", "memory": "8Gi"}  # no GPU asked for
    assert trainer["command"][-2:] == ["--nproc-per-node", "2"]


def _curriculum(tmp_path, change) -> tuple[CurriculumSpec, str]:
    doc = yaml.safe_load(FULL_PATH.read_text())
    change(doc)
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(doc))
    return CurriculumSpec.load(path), str(path)


def test_a_named_kueue_queue_labels_the_job_and_leaves_admission_to_kueue(tmp_path):
    curriculum, path = _curriculum(tmp_path, lambda d: d.update(cluster={"queue": "gpu-h100-queue"}))
    job = build_trainjob(curriculum, path, "stage0-text", "run-1")
    validate_trainer_manifest(job)
    assert job["metadata"]["labels"] == {KUEUE_QUEUE_LABEL: "gpu-h100-queue"}
    assert job["spec"]["suspend"] is True


@pytest.mark.parametrize(
    ("change", "stage", "message"),
    [
        (lambda d: d["stages"][0].update(parallel={}, resources={**d["stages"][0]["resources"], "nodes": 1,
                                                                 "gpus_per_node": 1}), "stage0-text",
         "stage 'stage0-text': runs in one process"),
        (lambda d: d.pop("checkpoint_storage"), "stage0-text", "stage 'stage0-text': a multi-process stage writes its "
         "checkpoint from every node; set checkpoint_storage"),
        (lambda d: d["stages"][2]["resources"].pop("max_duration_hours"), "stage1-text-speech",
         "stage 'stage1-text-speech': resources.max_duration_hours is not set"),
    ],
    ids=["one-process", "no-checkpoint-volume", "no-deadline"],
)  # fmt: skip
def test_what_a_trainjob_cannot_honour_is_refused_with_file_stage_and_field(tmp_path, change, stage, message):
    curriculum, path = _curriculum(tmp_path, change)
    with pytest.raises(TrainJobError) as err:
        build_trainjob(curriculum, path, stage, "run-1")
    assert str(err.value).startswith(f"{path}: {message}")


def test_a_bad_run_name_or_a_missing_dataset_folder_is_refused():
    with pytest.raises(TrainJobError, match="run name 'no/slashes'"):
        build_trainjob(FULL, FULL_PATH, "stage0-text", "no/slashes")
    with pytest.raises(TrainJobError, match=r"no folder given for dataset\(s\) \['text_corpus'\]"):
        build_trainjob(FULL, FULL_PATH, "stage0-text", "r", StageInputs(datasets={}, tokenizer="/t.json"))


@pytest.mark.parametrize("num_nodes", [2, 64, 1000])
def test_job_names_are_deterministic_rfc1035_and_fit_jobset_pod_names(num_nodes):
    runs = ["run-1", "run_1", "3f8e6c1a-5b7d-4c2e-9a0f-1d2b3c4d5e6f", "X" * 128, "9", "a.b"]
    stages = ["stage0-text", "stage4b-context-128k", "7-digits-first", "S" * 90]
    names = {}
    for run in runs:
        for stage in stages:
            name = trainjob_name(run, stage, num_nodes)
            assert name == trainjob_name(run, stage, num_nodes)
            assert RFC1035.match(name) and len(name) <= 63, name
            # JobSet names a node's pod <job>-node-<job index>-<pod index>-<5 random> and validates it as a label.
            assert len(f"{name}-node-0-{num_nodes - 1}-abcde") <= 63, name
            names[(run, stage)] = name
    assert len(set(names.values())) == len(names)  # run_1 and run-1 sanitise alike; the hash keeps them apart


@pytest.mark.parametrize(
    "breakage",
    [
        lambda job: job["spec"]["trainer"].update(numNodes="64"),  # wrong type
        lambda job: job["spec"]["runtimeRef"].pop("name"),  # required field
        lambda job: job["spec"]["trainer"].update(numNode=job["spec"]["trainer"].pop("numNodes")),  # misspelt
        lambda job: job["spec"]["runtimePatches"][0].pop("manager"),
    ],
    ids=["type", "required", "unknown-field", "patch-manager"],
)
def test_the_trainer_api_check_rejects_a_broken_trainjob(breakage):
    job = build_trainjob(FULL, FULL_PATH, "stage0-text", "run-1")
    breakage(job)
    with pytest.raises((pydantic.ValidationError, AssertionError)):
        validate_trainer_manifest(job)


def test_the_kubernetes_check_rejects_a_broken_node_pod():
    job = build_trainjob(FULL, FULL_PATH, "stage0-text", "run-1")
    patch = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    patch["template"]["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"] = {"claim": "x"}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_pod(trainjob_node_pod(load_runtime(), job), "broken")


def test_cli_prints_the_trainjob_as_yaml_without_importing_torch_or_kfp(tmp_path):
    probe = (
        "import sys; from components.cli import app\n"
        "try:\n    app(sys.argv[1:], standalone_mode=False)\nexcept SystemExit as exc:\n    assert not exc.code\n"
        "print('HEAVY' + repr(sorted(m for m in ('torch', 'kfp', 'megatron') if m in sys.modules)), file=sys.stderr)"
    )
    volume_only, volume_path = _curriculum(tmp_path, lambda d: d.pop("cluster"))  # no object storage named
    stage = "stage2-multimodal"
    args = ["pipeline", "trainjob", "--stage", stage, "--run-name", "r7"]
    launcher_env = ("OMNISTAGE_CHECKPOINT_URI", "OMNISTAGE_DVC_REMOTE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
    env = {k: v for k, v in os.environ.items() if k not in launcher_env}  # the S3 fixtures may have set them

    def trainer_of(curriculum, *extra, probe_heavy=False):
        command = ["-c", probe] if probe_heavy else ["-m", "components.cli"]
        proc = subprocess.run([sys.executable, *command, *args, "--curriculum", str(curriculum), *extra],
                              capture_output=True, text=True, cwd=REPO_ROOT, timeout=60, env=env)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "HEAVY[]" in proc.stderr or not probe_heavy
        return yaml.safe_load(proc.stdout)

    assert trainer_of(volume_path, probe_heavy=True) == build_trainjob(volume_only, volume_path, stage, "r7")

    # With object storage in the shell's environment (the curriculum names none): what the launcher would create.
    env.update(OMNISTAGE_CHECKPOINT_URI="s3://b/ckpt", OMNISTAGE_DVC_REMOTE="s3://b/dvc")
    names = FULL.stage(stage).data.datasets
    versions = [a for name in names for a in ("--dataset", f"{name}={name}@{'0' * 32}.dir")]
    trainer = trainer_of(volume_path, *versions, "--tokenizer", "s3://b/t.json")["spec"]["trainer"]
    command = trainer["command"]
    previous = FULL.stage(stage).init_from
    assert command[command.index("--checkpoint-uri") + 1] == f"s3://b/ckpt/{FULL.name}/r7/{stage}/checkpoint"
    assert command[command.index("--init-from") + 1] == f"s3://b/ckpt/{FULL.name}/r7/{previous}/checkpoint"
    assert command[command.index("--tokenizer") + 1] == "s3://b/t.json"
    assert {"name": "OMNISTAGE_DVC_REMOTE", "value": "s3://b/dvc"} in trainer["env"]

    # The shipped recipe names its buckets: they win over the shell's (the compiled pipeline's pods carry them).
    trainer = trainer_of(FULL_PATH, *versions)["spec"]["trainer"]
    uri = trainer["command"][trainer["command"].index("--checkpoint-uri") + 1]
    assert uri == f"{FULL.cluster.checkpoint_uri}/{FULL.name}/r7/{stage}/checkpoint"
    assert {"name": "OMNISTAGE_DVC_REMOTE", "value": FULL.cluster.dvc_remote} in trainer["env"]


def test_cli_refuses_a_single_node_stage_with_the_reason():
    tiny = REPO_ROOT / "data_specs" / "curriculum" / "tiny.yaml"
    proc = subprocess.run([sys.executable, "-m", "components.cli", "pipeline", "trainjob", "--curriculum", str(tiny),
                           "--stage", "sft"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)  # fmt: skip
    assert proc.returncode != 0 and "runs in one process" in proc.stderr and not proc.stdout


def test_the_efa_network_profile_reaches_every_node_and_still_validates(tmp_path):
    curriculum, path = _curriculum(tmp_path, lambda d: d.update(cluster={"network": "efa"}))
    efa = network_profile("efa")
    for stage_name in ("stage0-text", "stage5-audio-encoder"):
        job = build_trainjob(curriculum, path, stage_name, "run-1")
        validate_trainer_manifest(job)
        pod = trainjob_node_pod(load_runtime(), job)
        validate_pod(pod, f"{job['metadata']['name']}-node-0-0-abcde")
        (node,) = pod["containers"]
        gpus = str(curriculum.stage(stage_name).resources.gpus_per_node)
        for amounts in (node["resources"]["requests"], node["resources"]["limits"]):  # hugepages: requests = limits
            assert amounts[EFA_RESOURCE] == str(EFA_INTERFACES_P5) and amounts["hugepages-2Mi"] == "5120Mi"
            assert amounts[GPU_RESOURCE] == gpus
        env = {e["name"]: e.get("value") for e in node["env"]}
        assert env.items() >= efa.env.items() and env["FI_PROVIDER"] == "efa"
        assert "MLFLOW_TRACKING_USERNAME" in env  # the runtime's Secret env is kept beside the profile's
    without = build_trainjob(FULL, FULL_PATH, "stage0-text", "run-1")  # network: none (the default)
    assert EFA_RESOURCE not in without["spec"]["trainer"]["resourcesPerNode"]["limits"]
    assert "env" not in without["spec"]["trainer"]


def test_an_unknown_network_profile_is_refused_with_the_choices(tmp_path):
    with pytest.raises(SpecError, match=r"cluster\.network.*'none' or 'efa'"):
        _curriculum(tmp_path, lambda d: d.update(cluster={"network": "gpudirect-tcpxo"}))
