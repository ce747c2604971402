"""What a KFP stage component runs: parse its string parameters and call the tracked stage runner, or, for a
multi-node stage, build the TrainJob its nodes run."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import NoReturn

from components.specs.curriculum import CurriculumSpec
from components.tracking.mlflow_stage import tracked_stage
from components.training.stage_runner import StageRun

POINTER = "checkpoint.uri"
log = logging.getLogger(__name__)


def follow_pointer(artifact: Path) -> Path:
    """The stage output folder an artifact stands for: itself, or where its pointer file says (PVC)."""
    pointer = Path(artifact) / POINTER
    return Path(pointer.read_text().strip()) if pointer.is_file() else Path(artifact)


def run_stage_step(curriculum: str, stage: str, datasets: str, tokenizer: str, tracking_uri: str,
                   parent_run_id: str, max_steps: int, out: str, init_from: str | None = None) -> dict:  # fmt: skip
    """`datasets` is JSON {name: folder}; `max_steps` 0 means the stage's own budget.

    With OMNISTAGE_CHECKPOINT_ROOT set (a PVC mounted by the pipeline), the checkpoint is written there and
    the output artifact holds a pointer file (`checkpoint.uri`) the next stage follows.
    """
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
        artifact.mkdir(parents=True, exist_ok=True)
        (artifact / POINTER).write_text(str(Path(out).resolve()))
    return {"stage": result.stage, "steps": result.steps, "final_loss": result.final_loss, "run_id": run_id}


def launch_stage_step(curriculum: str, stage: str, run_name: str, datasets: str, tokenizer: str, tracking_uri: str,
                      max_steps: int, init_from: str | None = None) -> NoReturn:  # fmt: skip
    """The launcher task of a multi-node stage: builds the TrainJob (logged for review), then stops.

    Creating it through the Kubernetes API, re-attaching on retry, streaming its logs, failing with its
    reason, deleting it on cancel and writing the checkpoint pointer artifact is the launcher of issue 10,
    not built yet; the nodes' entry point (`--nproc-per-node`) waits for issue 13.
    """
    import yaml

    from components.pipelines.trainjob import StageInputs, build_trainjob

    inputs = StageInputs(datasets=json.loads(datasets), tokenizer=tokenizer,
                         init_from=str(follow_pointer(Path(init_from))) if init_from else None,
                         tracking_uri=tracking_uri, max_steps=max_steps or None)  # fmt: skip
    manifest = build_trainjob(CurriculumSpec.load(curriculum), curriculum, stage, run_name, inputs)
    log.info("TrainJob for stage %s:\n%s", stage, yaml.safe_dump(manifest, sort_keys=False))
    raise NotImplementedError(
        f"stage '{stage}' needs {manifest['spec']['trainer']['numNodes']} nodes: submitting its TrainJob "
        f"{manifest['metadata']['name']} (logged above) is the launcher of issue 10, which is not built yet"
    )
