"""What a KFP stage component runs: parse its string parameters and call the tracked stage runner."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from components.specs.curriculum import CurriculumSpec
from components.tracking.mlflow_stage import tracked_stage
from components.training.stage_runner import StageRun

POINTER = "checkpoint.uri"


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
