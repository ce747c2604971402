"""KFP components for curriculum training. Each body is a few lines around the library.

No `from __future__ import annotations` here: KFP reads the annotations to type artifacts.
`install_kfp_package=False` because the training image already holds the project (GPU node pools often
have no internet).
"""

import os

from kfp import dsl
from kfp.dsl import Input, Model, Output

TRAIN_IMAGE = os.environ.get("OMNISTAGE_TRAIN_IMAGE", "ghcr.io/omnistage/omnistage-train:latest")


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def start_curriculum_run(curriculum: str, tracking_uri: str) -> str:
    """Open the parent MLflow run; returns its id ('offline' when the server is unreachable)."""
    from components.tracking.mlflow_stage import start_parent_run

    return start_parent_run(curriculum, tracking_uri)


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
