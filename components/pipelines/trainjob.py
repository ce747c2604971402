"""A curriculum stage of several processes (nodes x processes per node) as a Kubeflow Trainer v2 TrainJob
(trainer.kubeflow.org/v1alpha1).

The TrainJob references the ClusterTrainingRuntime `omnistage-megatron` (infra/k8s/trainer/), which holds
what every stage shares: the torch ML policy (Trainer injects torchrun's PET_* rendezvous variables into
each node), the training image by digest, the checkpoint volume and the MLflow credentials. The TrainJob
adds what the curriculum says about one stage: nodes, GPUs/CPU/memory per node, the GPU pool's node
selector and toleration, the inter-node network profile's resources and env (`cluster.network`,
network.py), the checkpoint claim, the Kueue queue, the deadline, and the command every node runs.

    manifest = build_trainjob(CurriculumSpec.load(path), path, "stage0-text", run_name="run-1")
    omnistage pipeline trainjob --curriculum data_specs/curriculum/longcat_omni.yaml --stage stage0-text

The command is `omnistage train ... --nproc-per-node N` (torchrun under the stage entry point), built by
node_command, which the local submitter (local_submitter.py) runs on this machine too. Creating the job on a
cluster, re-attaching, streaming its logs and deleting it is trainjob_launcher.py's work: it creates exactly
this manifest, and re-attaches to an existing job only when its `omnistage.io/spec-hash` annotation equals
this manifest's.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from components.object_storage import is_remote
from components.orchestration.object_store import ENDPOINT_ENV
from components.pipelines.cluster import GPU_RESOURCE, TRAINING_RUNTIME, node_selector, runs_as_trainjob, tolerations
from components.pipelines.network import network_profile
from components.specs.curriculum import CurriculumSpec, StageSpec
from components.versioning.dataset_cache import REMOTE_ENV

API_VERSION = "trainer.kubeflow.org/v1alpha1"
# Trainer's convention: the trainer replicated job and its container are both named "node".
NODE = "node"
CHECKPOINT_VOLUME = "checkpoints"  # the volume name the runtime mounts; the TrainJob re-points its claim
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# The digest of what omnistage asked for. Admission (Trainer's webhook stamps runtimePatches, Kueue adds its
# own patch and unsuspends) changes the live spec, so a retried launcher compares this, not the spec.
SPEC_HASH_ANNOTATION = "omnistage.io/spec-hash"
PATCH_MANAGER = "omnistage.io/curriculum"  # runtimePatches entries are keyed by a domain-prefixed manager
REPO_ROOT = Path(__file__).resolve().parents[2]  # the training image holds the repo at its WORKDIR
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # a path segment on the checkpoint volume


class TrainJobError(ValueError):
    """A stage that cannot become a TrainJob; the message names the file, the stage, the field and the fix."""


@dataclass(frozen=True)
class StageInputs:
    """What the nodes read, as paths inside their pods."""

    datasets: dict[str, str]
    tokenizer: str
    init_from: str | None = None
    tracking_uri: str | None = None
    max_steps: int | None = None
    parent_run_id: str | None = None
    """The curriculum's MLflow parent run: rank 0 tracks the stage as its child."""
    checkpoint_uri: str | None = None
    """An s3:// or gs:// URI the nodes also publish the checkpoint to."""
    dvc_remote: str | None = None
    """The DVC remote `NAME@VERSION` datasets are restored from (the nodes' `OMNISTAGE_DVC_REMOTE`)."""
    s3_endpoint: str | None = None
    """An S3-compatible endpoint that is not AWS (the nodes' `AWS_ENDPOINT_URL`); credentials come from the
    runtime's `omnistage-s3` Secret env (infra/k8s/trainer/omnistage-megatron.yaml)."""

    @classmethod
    def on_checkpoint_volume(cls, curriculum: CurriculumSpec, stage: StageSpec, run_name: str) -> StageInputs:
        """The layout `omnistage pipeline trainjob` assumes when not told: datasets and tokenizer on the shared
        volume, the previous stage's checkpoint where the same run wrote it. The launcher passes what its task
        was given instead (`NAME@VERSION` datasets, URIs), which every node makes local (components/cli/train.py)."""
        root = curriculum.checkpoint_storage.mount_path
        previous = stage_checkpoint_dir(curriculum, run_name, stage.init_from) if stage.init_from else None
        return cls(datasets={name: f"{root}/datasets/{name}" for name in stage.data.datasets},
                   tokenizer=f"{root}/tokenizer.json", init_from=previous)  # fmt: skip


def with_launcher_environment(inputs: StageInputs, curriculum: CurriculumSpec, stage_name: str,
                              run_name: str) -> StageInputs:  # fmt: skip
    """`inputs` plus the object-storage settings, each the curriculum's `cluster.*` when set, else the launcher's
    environment (stage_entry.curriculum_or_env): the checkpoint URI under `checkpoint_uri` /
    `$OMNISTAGE_CHECKPOINT_URI`, keyed by run name + stage like the job's name and its `--out` (a retried
    launcher names the same URI), the DVC remote and the S3 endpoint for the nodes' env."""
    import dataclasses

    from components.object_storage import ENDPOINT_ENV_VARS, s3_endpoint_url
    from components.pipelines.stage_entry import checkpoint_uri_root, curriculum_or_env
    from components.training.checkpoint_store import stage_checkpoint_uri

    cluster = curriculum.cluster
    root = checkpoint_uri_root(curriculum)
    endpoint = cluster.s3_endpoint
    for name in ENDPOINT_ENV_VARS:  # the variables s3_endpoint_url reads: a differing one is named
        curriculum_or_env(endpoint, name, "s3_endpoint")
    return dataclasses.replace(
        inputs,
        checkpoint_uri=stage_checkpoint_uri(root, curriculum.name, run_name, stage_name) if root else None,
        dvc_remote=curriculum_or_env(cluster.dvc_remote, REMOTE_ENV, "dvc_remote"),
        s3_endpoint=endpoint or s3_endpoint_url(),
    )


def stage_checkpoint_dir(curriculum: CurriculumSpec, run_name: str, stage_name: str) -> str:
    """Where a run's stage writes its checkpoint on the shared volume; the next stage reads it from there."""
    return f"{curriculum.checkpoint_storage.mount_path}/{curriculum.name}/{run_name}/{stage_name}"


def trainjob_name(run_name: str, stage_name: str, num_nodes: int) -> str:
    """A deterministic RFC 1035 name from run + stage, so a retried launcher finds the job it created.

    The bound is JobSet's, not only the TrainJob's 63: pods are named <job>-node-0-<node index>-<5 random>
    and must fit a 63-character label too. A hash of the exact run and stage keeps names that sanitise or
    truncate alike apart.
    """
    digest = hashlib.sha256(f"{run_name}\n{stage_name}".encode()).hexdigest()[:8]
    limit = 63 - len(f"-{NODE}-0-{num_nodes - 1}-xxxxx")
    readable = re.sub(r"[^a-z0-9]+", "-", f"{stage_name}-{run_name}".lower()).strip("-")
    if not readable[:1].isalpha():
        readable = f"s-{readable}"  # RFC 1035: starts with a letter
    head = readable[: limit - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}"


def spec_hash(manifest: dict) -> str:
    """A digest of a TrainJob manifest's name, labels, annotations (but its own) and spec."""
    metadata = manifest["metadata"]
    annotations = {k: v for k, v in metadata.get("annotations", {}).items() if k != SPEC_HASH_ANNOTATION}
    desired = {"name": metadata["name"], "labels": metadata.get("labels", {}), "annotations": annotations,
               "spec": manifest["spec"]}  # fmt: skip
    return hashlib.sha256(json.dumps(desired, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _in_image(curriculum_file: Path | str) -> str:
    """The curriculum's path inside the training image (the repo is its WORKDIR); as given when outside it."""
    path = Path(curriculum_file).resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(curriculum_file)


def node_command(curriculum: str, stage: StageSpec, inputs: StageInputs, out: str) -> list[str]:
    """What every node runs: the stage entry point, which starts the node's processes under torchrun.

    The one builder for both submitters: a TrainJob's nodes run it (build_trainjob), and so does this machine
    under kfp.local (local_submitter.py). On a cluster torchrun reads the node count, rank and master address
    from the PET_* variables Trainer sets, so they are not on the command line; on one machine the entry point
    adds `--standalone` itself (components/cli/train.py).
    """
    command = ["omnistage", "train", "--curriculum", curriculum, "--stage", stage.name]
    for name, folder in sorted(inputs.datasets.items()):
        command += ["--dataset", f"{name}={folder}"]
    command += ["--tokenizer", inputs.tokenizer, "--out", out]
    if inputs.init_from:
        command += ["--init-from", inputs.init_from]
    if inputs.max_steps:
        command += ["--max-steps", str(inputs.max_steps)]
    if inputs.checkpoint_uri:
        command += ["--checkpoint-uri", inputs.checkpoint_uri]
    if inputs.tracking_uri:  # rank 0 tracks the stage in MLflow, under the curriculum's parent run when given
        command += ["--tracking-uri", inputs.tracking_uri]
        command += ["--parent-run-id", inputs.parent_run_id] if inputs.parent_run_id else []
    # --resume: a node group that Trainer restarts (node failure, preemption) continues from the stage's own
    # last checkpoint; before the first save the stage starts from --init-from.
    return command + ["--resume", "--nproc-per-node", str(stage.resources.processes())]


def _refuse_unless_launchable(curriculum: CurriculumSpec, where: str, stage: StageSpec, run_name: str) -> None:
    at = f"{where}: stage '{stage.name}'"
    if not runs_as_trainjob(stage):
        raise TrainJobError(f"{at}: runs in one process (resources.nodes 1, gpus_per_node <= 1, no "
                            "processes_per_node); a one-process stage is a KFP task pod, not a TrainJob (set "
                            "nodes, gpus_per_node or processes_per_node above 1 to run it data parallel)")  # fmt: skip
    if curriculum.checkpoint_storage is None:
        raise TrainJobError(f"{at}: a multi-process stage writes its checkpoint from every node; set "
                            "checkpoint_storage (a ReadWriteMany PVC) in the curriculum")  # fmt: skip
    if stage.resources.max_duration_hours is None:
        raise TrainJobError(f"{at}: resources.max_duration_hours is not set; a TrainJob holding "
                            f"{stage.resources.nodes} nodes needs a deadline (activeDeadlineSeconds): "
                            "add it")  # fmt: skip
    if not _RUN_NAME.match(run_name):
        raise TrainJobError(f"run name {run_name!r}: use letters, digits, '.', '_' or '-' (at most 128), "
                            "starting with a letter or digit")  # fmt: skip


def build_trainjob(curriculum: CurriculumSpec, curriculum_file: Path | str, stage_name: str, run_name: str,
                   inputs: StageInputs | None = None) -> dict:  # fmt: skip
    """The TrainJob manifest (a plain dict, ready for YAML or the Kubernetes API) for one multi-process stage."""
    stage = curriculum.stage(stage_name)
    _refuse_unless_launchable(curriculum, str(curriculum_file), stage, run_name)
    inputs = inputs or StageInputs.on_checkpoint_volume(curriculum, stage, run_name)
    missing = sorted(set(stage.data.datasets) - set(inputs.datasets))
    if missing:
        raise TrainJobError(f"stage '{stage.name}': no folder given for dataset(s) {missing} that data.datasets names")
    by_uri = sorted(name for name, location in inputs.datasets.items() if is_remote(location))
    if by_uri:  # refused here, not after 64 nodes were scheduled (the nodes would refuse it: local_dataset)
        raise TrainJobError(f"stage '{stage.name}': dataset(s) {by_uri} given by URI; a node restores a dataset "
                            "by its DVC version: pass NAME@VERSION (e.g. demo@3f2a...c1.dir)")  # fmt: skip
    res, storage = stage.resources, curriculum.checkpoint_storage
    try:  # checked when the spec loaded; this is the plan the nodes' numbers must satisfy
        stage.parallel.data_parallel(res.world_size())
    except ValueError as exc:
        raise TrainJobError(f"{curriculum_file}: stage '{stage.name}': {exc}") from None
    network = network_profile(curriculum.cluster.network)
    per_node = {GPU_RESOURCE: str(res.gpus_per_node)} if res.gpus_per_node else {}
    per_node.update(cpu=res.cpu, memory=res.memory, **network.resources)
    mount = {"name": CHECKPOINT_VOLUME, "mountPath": storage.mount_path}
    pod_patch = {
        "nodeSelector": node_selector(res),
        "tolerations": tolerations(res),
        # Upserted by name over the runtime's volume: the curriculum's claim wins. Mounts merge by path, so
        # a mount_path other than the runtime's adds a second mount of the same volume, which is harmless.
        "volumes": [{"name": CHECKPOINT_VOLUME, "persistentVolumeClaim": {"claimName": storage.pvc}}],
        "containers": [{"name": NODE, "volumeMounts": [mount]}],
    }
    node_job = {"name": NODE, "template": {"spec": {"template": {"spec": pod_patch}}}}
    annotations = {
        "omnistage.io/curriculum": curriculum.name,
        "omnistage.io/stage": stage.name,
        "omnistage.io/run": run_name,
    }
    out = stage_checkpoint_dir(curriculum, run_name, stage.name)
    metadata: dict = {"name": trainjob_name(run_name, stage.name, res.nodes), "annotations": annotations}
    spec: dict = {
        "runtimeRef": {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime", "name": TRAINING_RUNTIME},
        "activeDeadlineSeconds": int(res.max_duration_hours * 3600),
        "trainer": {
            "numNodes": res.nodes,
            "numProcPerNode": res.processes(),
            "resourcesPerNode": {"requests": dict(per_node), "limits": dict(per_node)},
            "command": node_command(_in_image(curriculum_file), stage, inputs, out),
        },
        "runtimePatches": [
            {"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [node_job]}}}}
        ],
    }
    env = [{"name": name, "value": value} for name, value in network.env.items()]
    if inputs.tracking_uri:  # with the runtime's credentials from the Secret; rank 0 tracks (--tracking-uri)
        env.append({"name": "MLFLOW_TRACKING_URI", "value": inputs.tracking_uri})
    if inputs.dvc_remote:  # NAME@VERSION datasets are restored from here on every node
        env.append({"name": REMOTE_ENV, "value": inputs.dvc_remote})
    if inputs.s3_endpoint:  # read by boto3/s3fs and given to DVC's S3 remote (components/object_storage.py)
        env.append({"name": ENDPOINT_ENV, "value": inputs.s3_endpoint})
    if env:
        spec["trainer"]["env"] = env
    if curriculum.cluster.queue:
        metadata["labels"] = {KUEUE_QUEUE_LABEL: curriculum.cluster.queue}
        spec["suspend"] = True  # Kueue admits the job by unsuspending it once the queue has quota for every node
    manifest = {"apiVersion": API_VERSION, "kind": "TrainJob", "metadata": metadata, "spec": spec}
    annotations[SPEC_HASH_ANNOTATION] = spec_hash(manifest)
    return manifest
