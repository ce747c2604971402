"""What a KFP stage component runs: parse its string parameters and call the tracked stage runner, or, for a
multi-node stage, launch the TrainJob its nodes run (trainjob_launcher.py) and wait for it.

Both write the stage's checkpoint location into the output artifact the same way (write_checkpoint_pointer),
and the next stage reads it back with follow_pointer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from components.specs.curriculum import CurriculumSpec

if TYPE_CHECKING:
    from components.pipelines.trainjob_launcher import LaunchSettings

POINTER = "checkpoint.uri"
log = logging.getLogger(__name__)


def follow_pointer(artifact: Path) -> Path:
    """The stage output folder an artifact stands for: itself, or where its pointer file says (PVC)."""
    pointer = Path(artifact) / POINTER
    return Path(pointer.read_text().strip()) if pointer.is_file() else Path(artifact)


def write_checkpoint_pointer(artifact: Path | str, checkpoint: str) -> None:
    """Make the output artifact stand for a checkpoint written elsewhere (the shared volume, object storage)."""
    Path(artifact).mkdir(parents=True, exist_ok=True)
    (Path(artifact) / POINTER).write_text(checkpoint)


def run_stage_step(curriculum: str, stage: str, datasets: str, tokenizer: str, tracking_uri: str,
                   parent_run_id: str, max_steps: int, out: str, init_from: str | None = None) -> dict:  # fmt: skip
    """`datasets` is JSON {name: folder}; `max_steps` 0 means the stage's own budget.

    With OMNISTAGE_CHECKPOINT_ROOT set (a PVC mounted by the pipeline), the checkpoint is written there and
    the output artifact holds a pointer file (`checkpoint.uri`) the next stage follows.
    """
    # Imported here: torch and MLflow are heavy, and the multi-node launcher below needs neither.
    from components.tracking.mlflow_stage import tracked_stage
    from components.training.stage_runner import StageRun

    root = os.environ.get("OMNISTAGE_CHECKPOINT_ROOT")
    artifact = Path(out)
    if root:
        run_key = hashlib.sha256(str(artifact.resolve()).encode()).hexdigest()[:16]  # unique per task run
        out = str(Path(root) / CurriculumSpec.load(curriculum).name / run_key / stage)
    if init_from:
        init_from = str(follow_pointer(Path(init_from)))
    run = StageRun(
        CurriculumSpec.load(curriculum),
        stage,
        {name: Path(folder) for name, folder in json.loads(datasets).items()},
        Path(tokenizer),
        Path(out),
        init_from=Path(init_from) if init_from else None,
        max_steps=max_steps or None,
    )
    result, run_id = tracked_stage(run, tracking_uri, None if parent_run_id == "offline" else parent_run_id)
    if root:
        write_checkpoint_pointer(artifact, str(Path(out).resolve()))
    return {"stage": result.stage, "steps": result.steps, "final_loss": result.final_loss, "run_id": run_id}


def launch_stage_step(curriculum: str, stage: str, run_name: str, datasets: str, tokenizer: str, tracking_uri: str,
                      max_steps: int, out: str, init_from: str | None = None,
                      settings: LaunchSettings | None = None) -> dict:  # fmt: skip
    """The launcher task of a multi-node stage: create (or, on retry, re-attach to) its TrainJob, print the
    rank-0 node's log until the job ends, fail with the job's reason, and on success point the output
    artifact `out` at the checkpoint the nodes wrote. A cancelled task deletes the job."""
    from components.pipelines.trainjob import StageInputs, build_trainjob, stage_checkpoint_dir
    from components.pipelines.trainjob_launcher import launch_trainjob

    spec = CurriculumSpec.load(curriculum)
    inputs = StageInputs(datasets=json.loads(datasets), tokenizer=tokenizer,
                         init_from=str(follow_pointer(Path(init_from))) if init_from else None,
                         tracking_uri=tracking_uri, max_steps=max_steps or None)  # fmt: skip
    manifest = build_trainjob(spec, curriculum, stage, run_name, inputs)
    result = launch_trainjob(manifest, settings)
    checkpoint = stage_checkpoint_dir(spec, run_name, stage)  # the --out every node was given
    write_checkpoint_pointer(out, checkpoint)
    log.info("stage %s: %s/%s complete; checkpoint %s", stage, result.namespace, result.name, checkpoint)
    return {"stage": stage, "trainjob": result.name, "namespace": result.namespace, "reattached": result.reattached,
            "checkpoint": checkpoint}  # fmt: skip
