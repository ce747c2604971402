"""KFP components for curriculum training. Each body is a few lines around the library.

No `from __future__ import annotations` here: KFP reads the annotations to type artifacts.
`install_kfp_package=False` because the training image already holds the project (GPU node pools often
have no internet).
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Input, Model, Output

from components.images import CPU_IMAGE_VAR, DEFAULT_CPU_IMAGE, DEFAULT_TRAIN_IMAGE, TRAIN_IMAGE_VAR, cluster_image

# By digest (components/images.py): compiling with OMNISTAGE_TRAIN_IMAGE/OMNISTAGE_IMAGE set to `latest` fails.
TRAIN_IMAGE = cluster_image(TRAIN_IMAGE_VAR, DEFAULT_TRAIN_IMAGE)
CPU_IMAGE = cluster_image(CPU_IMAGE_VAR, DEFAULT_CPU_IMAGE)  # as the Airflow steps


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def start_curriculum_run(curriculum: str, tracking_uri: str, datasets: str, training_key: str) -> str:
    """Open the parent MLflow run; returns its id ('offline' when the server is unreachable)."""
    from components.tracking.mlflow_stage import start_parent_run

    return start_parent_run(curriculum, tracking_uri, datasets, training_key)


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def train_first_stage(curriculum: str, stage: str, datasets: str, tokenizer: str, tracking_uri: str,
                      parent_run_id: str, max_steps: int, checkpoint: Output[Model]):  # fmt: skip
    """Train the curriculum's first stage from scratch; the checkpoint folder is the output artifact."""
    from components.pipelines.stage_entry import run_stage_step

    run_stage_step(curriculum, stage, datasets, tokenizer, tracking_uri, parent_run_id, max_steps, checkpoint.path)


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def train_next_stage(curriculum: str, stage: str, datasets: str, tokenizer: str, tracking_uri: str,
                     parent_run_id: str, max_steps: int, previous: Input[Model],
                     checkpoint: Output[Model]):  # fmt: skip
    """Train a later stage, initialised from the previous stage's checkpoint (weights only)."""
    from components.pipelines.stage_entry import run_stage_step

    run_stage_step(curriculum, stage, datasets, tokenizer, tracking_uri, parent_run_id, max_steps, checkpoint.path,
                   init_from=previous.path)  # fmt: skip


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def launch_stage(curriculum: str, stage: str, run_name: str, submitter: str, datasets: str, tokenizer: str,
                 tracking_uri: str, parent_run_id: str, max_steps: int, checkpoint: Output[Model],
                 previous: Input[Model] | None = None):  # fmt: skip
    """A stage of several processes: starts its node command through `submitter` (trainjob: the TrainJob its
    nodes run, from a CPU task; local: torchrun on this machine), waits for it and points the checkpoint
    artifact at what the processes wrote (first stage: no previous)."""
    from components.pipelines.stage_entry import launch_stage_step

    launch_stage_step(curriculum, stage, run_name, datasets, tokenizer, tracking_uri, max_steps, checkpoint.path,
                      init_from=previous.path if previous else None, submitter=submitter,
                      parent_run_id=parent_run_id)  # fmt: skip


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def evaluate_candidate(checkpoint: Input[Model], gate: str, datasets: str,
                       tracking_uri: str) -> NamedTuple("Candidate", [("name", str), ("version", str)]):  # fmt: skip
    """Register the final checkpoint as a model version and score it on the gate's eval suites."""
    from collections import namedtuple

    from components.pipelines.promotion_entry import evaluate_step

    name, version = evaluate_step(checkpoint.path, gate, datasets, tracking_uri)
    return namedtuple("Candidate", ["name", "version"])(name, version)


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def judge_gate(name: str, version: str, gate: str, tracking_uri: str) -> str:
    """Apply the gate; the decision is recorded on the version. Returns promoted | rejected | awaiting-approval."""
    from components.pipelines.promotion_entry import gate_step

    return gate_step(name, version, gate, tracking_uri)


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def promote_champion(name: str, version: str, tracking_uri: str) -> str:
    """Move the `champion` alias (runs only when the gate said promoted)."""
    from components.pipelines.promotion_entry import promote_step

    return promote_step(name, version, tracking_uri)
