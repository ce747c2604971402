"""The curriculum as a Kubeflow pipeline: one task per stage, chained by checkpoint artifacts, each with
the stage's resources from the curriculum YAML (accelerator type and count, CPU/memory, the GPU node
pool's node selector and toleration, MLflow credentials from a Secret).

    omnistage pipeline compile --curriculum data_specs/curriculum/longcat_omni.yaml --out pipeline.yaml
    run_locally(...)   # the same pipeline through kfp.local's SubprocessRunner (no cluster)
"""

# No `from __future__ import annotations`: KFP reads the pipeline function's annotations as types.
from pathlib import Path

from kfp import compiler, dsl, kubernetes

from components.pipelines.stage_components import (
    evaluate_candidate,
    judge_gate,
    promote_champion,
    start_curriculum_run,
    train_first_stage,
    train_next_stage,
)
from components.specs.curriculum import CurriculumSpec, StageSpec

POOL_LABEL = "omnistage.io/pool"
GPU_TAINT = "nvidia.com/gpu"
MLFLOW_SECRET = "omnistage-mlflow"


def _mlflow_credentials(task) -> None:
    kubernetes.use_secret_as_env(task, secret_name=MLFLOW_SECRET, optional=True,
                                 secret_key_to_env={"username": "MLFLOW_TRACKING_USERNAME",
                                                    "password": "MLFLOW_TRACKING_PASSWORD"})  # fmt: skip


def _apply_resources(task, stage: StageSpec, curriculum: CurriculumSpec) -> None:
    res = stage.resources
    task.set_display_name(stage.name)
    task.set_cpu_limit(res.cpu)
    task.set_memory_limit(res.memory)
    if res.gpus_per_node:
        task.set_accelerator_type(res.accelerator)
        task.set_accelerator_limit(res.gpus_per_node)
        kubernetes.add_toleration(task, key=GPU_TAINT, operator="Exists", effect="NoSchedule")
    kubernetes.add_node_selector(task, label_key=POOL_LABEL, label_value=res.node_pool)
    _mlflow_credentials(task)
    if curriculum.checkpoint_storage is not None:
        storage = curriculum.checkpoint_storage
        kubernetes.mount_pvc(task, pvc_name=storage.pvc, mount_path=storage.mount_path)
        task.set_env_variable("OMNISTAGE_CHECKPOINT_ROOT", storage.mount_path)
    task.set_caching_options(False)  # a stage retrains only when asked to


def build_pipeline(curriculum_path: Path, gate_path: Path | None = None):
    """The curriculum's stages in order; with a gate, then evaluate -> gate -> (if promoted) promote."""
    curriculum = CurriculumSpec.load(curriculum_path)
    path = str(curriculum_path)
    gate = str(gate_path) if gate_path else None

    @dsl.pipeline(name=f"omnistage-{curriculum.name}", description=f"Curriculum {curriculum.name}: "
                  + " -> ".join(s.name for s in curriculum.stages))  # fmt: skip
    def pipeline(datasets: str, tokenizer: str, tracking_uri: str, max_steps: int = 0, training_key: str = ""):
        parent = start_curriculum_run(curriculum=path, tracking_uri=tracking_uri, datasets=datasets,
                                      training_key=training_key)  # fmt: skip
        parent.set_caching_options(False)
        previous = None
        for stage in curriculum.stages:
            common = dict(curriculum=path, stage=stage.name, datasets=datasets, tokenizer=tokenizer,
                          tracking_uri=tracking_uri, parent_run_id=parent.output, max_steps=max_steps)  # fmt: skip
            if previous is None:
                task = train_first_stage(**common)
            else:
                task = train_next_stage(**common, previous=previous.outputs["checkpoint"])
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
        with dsl.If(verdict.output == "promoted", name="gate-passed"):
            promote_champion(name=candidate.outputs["name"], version=candidate.outputs["version"],
                             tracking_uri=tracking_uri).set_caching_options(False)  # fmt: skip

    return pipeline


def compile_pipeline(curriculum_path: Path, out: Path, gate_path: Path | None = None) -> Path:
    compiler.Compiler().compile(build_pipeline(Path(curriculum_path), gate_path), str(out))
    return out


def run_locally(curriculum_path: Path, datasets: dict, tokenizer: Path, tracking_uri: str,
                pipeline_root: Path, max_steps: int = 0, gate_path: Path | None = None,
                training_key: str = ""):  # fmt: skip
    """Run the whole pipeline with kfp.local (subprocesses of this interpreter; resources are ignored)."""
    import json
    import warnings

    from kfp import local

    # kfp.local says, per task, that it ignores the Kubernetes settings and that the image is not Python:
    # both expected here (the cluster honours them); keep the log readable.
    warnings.filterwarnings("ignore", message=".*(custom or non-Python base image|settings \\[).*")

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root))
    pipeline = build_pipeline(Path(curriculum_path).resolve(), Path(gate_path).resolve() if gate_path else None)
    folders = json.dumps({k: str(Path(v).resolve()) for k, v in datasets.items()})
    return pipeline(datasets=folders, tokenizer=str(Path(tokenizer).resolve()), tracking_uri=tracking_uri,
                    max_steps=max_steps, training_key=training_key)  # fmt: skip
