"""The curriculum as a Kubeflow pipeline: one task per stage, chained by checkpoint artifacts, each with
the stage's resources from the curriculum YAML.

A one-process stage is one task pod: `nvidia.com/gpu` x gpus_per_node, CPU/memory, a node selector for its
pool and GPU model, the GPU taint's toleration, the pod deadline, MLflow credentials from a Secret. A stage
of several processes (nodes x processes per node > 1) is a `launch_stage` task that starts the stage's node
command (`omnistage train ... --nproc-per-node N`) through the pipeline's submitter:

- `trainjob` (compile_pipeline, for a cluster): a small CPU task on the curriculum's launcher pool creates
  the Kubeflow Trainer TrainJob its nodes run (trainjob.py); the GPUs are requested by the TrainJob;
- `local` (run_locally, kfp.local): the task runs the same command on this machine (torchrun, gloo on CPU).

    omnistage pipeline compile --curriculum data_specs/curriculum/longcat_omni.yaml --out pipeline.yaml
    run_locally(...)   # the same pipeline through kfp.local's SubprocessRunner (no cluster)
"""

# No `from __future__ import annotations`: KFP reads the pipeline function's annotations as types.
import math
from pathlib import Path

from kfp import compiler, dsl, kubernetes

from components.orchestration.object_store import S3_SECRET, S3_SECRET_KEYS
from components.pipelines.cluster import (
    GPU_RESOURCE,
    MLFLOW_SECRET,
    POOL_LABEL,
    node_selector,
    runs_as_trainjob,
    tolerations,
)
from components.pipelines.stage_components import (
    evaluate_candidate,
    judge_gate,
    launch_stage,
    promote_champion,
    start_curriculum_run,
    train_first_stage,
    train_next_stage,
)
from components.pipelines.stage_entry import SUBMITTERS
from components.specs.curriculum import CurriculumSpec, StageSpec

# The launcher only builds and watches a TrainJob: no GPU, little CPU and memory.
LAUNCHER_CPU, LAUNCHER_MEMORY = "1", "2Gi"
# A failed launcher attempt (its pod evicted, the API server away) is retried after 1, 2, 4 ... minutes.
LAUNCHER_RETRY_BACKOFF_S, LAUNCHER_RETRY_FACTOR = 60, 2.0


def _object_storage(task, curriculum: CurriculumSpec, credentials: bool) -> None:
    """The curriculum's `cluster.checkpoint_uri` / `dvc_remote` / `s3_endpoint` as the task's env, so the
    compiled pipeline carries them (no pod default to set by hand); with `credentials`, the S3 keys from the
    `omnistage-s3` Secret too (optional: absent with workload identity / IRSA). A launcher needs no keys: it
    only passes the settings on to its TrainJob, whose runtime gives every node the keys."""
    env = curriculum.cluster.object_storage_env()
    for name, value in env.items():
        task.set_env_variable(name, value)
    if credentials and env:
        kubernetes.use_secret_as_env(task, secret_name=S3_SECRET, optional=True, secret_key_to_env={
            key: name for name, key in S3_SECRET_KEYS.items()})  # fmt: skip


def _launcher_retry(task, stage: StageSpec, curriculum: CurriculumSpec) -> None:
    """Retries of a launcher re-attach to the TrainJob it created (its name is run + stage). Argo's
    maxDuration counts from the first attempt, so it must outlast the stage: every attempt may wait for
    admission and then for the job's whole deadline."""
    cluster = curriculum.cluster
    if not cluster.launcher_retries or stage.resources.max_duration_hours is None:
        return  # without a deadline the launcher refuses the stage (trainjob.build_trainjob): nothing to retry
    attempt_s = cluster.admission_timeout_s + stage.resources.max_duration_hours * 3600
    backoff_s = sum(LAUNCHER_RETRY_BACKOFF_S * LAUNCHER_RETRY_FACTOR**i for i in range(cluster.launcher_retries))
    total_s = math.ceil((cluster.launcher_retries + 1) * attempt_s + backoff_s)
    task.set_retry(num_retries=cluster.launcher_retries, backoff_duration=f"{LAUNCHER_RETRY_BACKOFF_S}s",
                   backoff_factor=LAUNCHER_RETRY_FACTOR, backoff_max_duration=f"{total_s}s")  # fmt: skip


def _mlflow_credentials(task) -> None:
    kubernetes.use_secret_as_env(task, secret_name=MLFLOW_SECRET, optional=True,
                                 secret_key_to_env={"username": "MLFLOW_TRACKING_USERNAME",
                                                    "password": "MLFLOW_TRACKING_PASSWORD"})  # fmt: skip


def _apply_resources(task, stage: StageSpec, curriculum: CurriculumSpec) -> None:
    """A one-node stage's pod: what it requests, where it may run, how long it may take."""
    res = stage.resources
    task.set_display_name(stage.name)
    task.set_cpu_limit(res.cpu)
    task.set_memory_limit(res.memory)
    if res.gpus_per_node:
        # KFP's driver uses the accelerator type verbatim as the resource name (a GPU model there leaves the
        # pod Pending forever); the model is a node selector instead.
        task.set_accelerator_type(GPU_RESOURCE)
        task.set_accelerator_limit(res.gpus_per_node)
    for key, value in node_selector(res).items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for toleration in tolerations(res):
        kubernetes.add_toleration(task, **toleration)
    if res.max_duration_hours is not None:
        kubernetes.set_timeout(task, int(res.max_duration_hours * 3600))
    _mlflow_credentials(task)
    if curriculum.checkpoint_storage is not None:
        storage = curriculum.checkpoint_storage
        kubernetes.mount_pvc(task, pvc_name=storage.pvc, mount_path=storage.mount_path)
        task.set_env_variable("OMNISTAGE_CHECKPOINT_ROOT", storage.mount_path)
    _object_storage(task, curriculum, credentials=True)
    task.set_caching_options(False)  # a stage retrains only when asked to


def _apply_launcher_resources(task, stage: StageSpec, curriculum: CurriculumSpec, submitter: str) -> None:
    """A multi-process stage's launcher pod: CPU only, off the GPU pools (it tolerates no GPU taint); retried
    when it submits a TrainJob (the local submitter's torchrun is not: a rerun would train the stage again)."""
    task.set_display_name(stage.name)
    task.set_cpu_limit(LAUNCHER_CPU)
    task.set_memory_limit(LAUNCHER_MEMORY)
    kubernetes.add_node_selector(task, label_key=POOL_LABEL, label_value=curriculum.cluster.launcher_pool)
    _object_storage(task, curriculum, credentials=False)
    if submitter == "trainjob":
        _launcher_retry(task, stage, curriculum)
    task.set_caching_options(False)


def build_pipeline(curriculum_path: Path, gate_path: Path | None = None, submitter: str = "trainjob"):
    """The curriculum's stages in order; with a gate, then evaluate -> gate -> (if promoted) promote.

    `submitter` (stage_entry.SUBMITTERS) is how multi-process stages start: a constant of their tasks.
    """
    if submitter not in SUBMITTERS:
        raise ValueError(f"submitter {submitter!r} is not one of {list(SUBMITTERS)}")
    curriculum = CurriculumSpec.load(curriculum_path)
    path = str(curriculum_path)
    gate = str(gate_path) if gate_path else None

    @dsl.pipeline(name=f"omnistage-{curriculum.name}", description=f"Curriculum {curriculum.name}: "
                  + " -> ".join(s.name for s in curriculum.stages))  # fmt: skip
    def pipeline(datasets: str, tokenizer: str, tracking_uri: str, max_steps: int = 0, training_key: str = ""):
        parent = start_curriculum_run(curriculum=path, tracking_uri=tracking_uri, datasets=datasets,
                                      training_key=training_key)  # fmt: skip
        parent.set_caching_options(False)
        _mlflow_credentials(parent)  # every task that talks to MLflow carries the Secret's credentials
        previous = None
        for stage in curriculum.stages:
            common = dict(curriculum=path, stage=stage.name, datasets=datasets, tokenizer=tokenizer,
                          tracking_uri=tracking_uri, max_steps=max_steps)  # fmt: skip
            chained = {} if previous is None else {"previous": previous.outputs["checkpoint"]}
            if runs_as_trainjob(stage):
                # The KFP run id names the TrainJob, so a retried launcher finds the job it created.
                task = launch_stage(**common, **chained, run_name=dsl.PIPELINE_JOB_ID_PLACEHOLDER, submitter=submitter,
                                    parent_run_id=parent.output)  # fmt: skip
                _apply_launcher_resources(task, stage, curriculum, submitter)
            else:
                stage_task = train_first_stage if previous is None else train_next_stage
                task = stage_task(**common, **chained, parent_run_id=parent.output)
                _apply_resources(task, stage, curriculum)
            previous = task
        if gate is None:
            return
        candidate = evaluate_candidate(checkpoint=previous.outputs["checkpoint"], gate=gate, datasets=datasets,
                                       tracking_uri=tracking_uri)  # fmt: skip
        verdict = judge_gate(name=candidate.outputs["name"], version=candidate.outputs["version"], gate=gate,
                             tracking_uri=tracking_uri)  # fmt: skip
        for task in (candidate, verdict):
            task.set_caching_options(False)
            _mlflow_credentials(task)
        _object_storage(candidate, curriculum, credentials=True)  # it reads the checkpoint the pointer names
        with dsl.If(verdict.output == "promoted", name="gate-passed"):
            promote = promote_champion(name=candidate.outputs["name"], version=candidate.outputs["version"],
                                       tracking_uri=tracking_uri)  # fmt: skip
            promote.set_caching_options(False)
            _mlflow_credentials(promote)

    return pipeline


def compile_pipeline(curriculum_path: Path, out: Path, gate_path: Path | None = None) -> Path:
    compiler.Compiler().compile(build_pipeline(Path(curriculum_path), gate_path), str(out))
    return out


def run_locally(curriculum_path: Path, datasets: dict, tokenizer: Path, tracking_uri: str,
                pipeline_root: Path, max_steps: int = 0, gate_path: Path | None = None,
                training_key: str = ""):  # fmt: skip
    """Run the whole pipeline with kfp.local (subprocesses of this interpreter; resources are ignored but the
    processes a stage asks for: its node command runs here under torchrun, the local submitter)."""
    import json
    import warnings

    from kfp import local

    # kfp.local says, per task, that it ignores the Kubernetes settings and that the image is not Python:
    # both expected here (the cluster honours them); keep the log readable.
    warnings.filterwarnings("ignore", message=".*(custom or non-Python base image|settings \\[).*")

    from components.pipelines.local_submitter import check_runs_here

    for stage in CurriculumSpec.load(curriculum_path).stages:  # before any stage trains
        check_runs_here(stage, str(curriculum_path))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root))
    pipeline = build_pipeline(Path(curriculum_path).resolve(), Path(gate_path).resolve() if gate_path else None,
                              submitter="local")  # fmt: skip
    folders = json.dumps({k: _as_given_or_absolute(v) for k, v in datasets.items()})
    return pipeline(datasets=folders, tokenizer=_as_given_or_absolute(tokenizer), tracking_uri=tracking_uri,
                    max_steps=max_steps, training_key=training_key)  # fmt: skip


def _as_given_or_absolute(location) -> str:
    """A `NAME@VERSION` or URI input unchanged (each stage makes it local), a folder absolute (tasks run elsewhere)."""
    from components.object_storage import is_remote
    from components.versioning.dataset_cache import parse_dataset_ref

    text = str(location)
    return text if parse_dataset_ref(text) or is_remote(text) else str(Path(text).resolve())
