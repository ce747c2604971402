"""What a KFP stage component runs: parse its string parameters and call the tracked stage runner."""

from __future__ import annotations

import json
from pathlib import Path

from components.specs.curriculum import CurriculumSpec
from components.tracking.mlflow_stage import tracked_stage
from components.training.stage_runner import StageRun


def run_stage_step(curriculum: str, stage: str, datasets: str, tokenizer: str, tracking_uri: str,
                   parent_run_id: str, max_steps: int, out: str, init_from: str | None = None) -> dict:  # fmt: skip
    """`datasets` is JSON {name: folder}; `max_steps` 0 means the stage's own budget."""
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
    return {"stage": result.stage, "steps": result.steps, "final_loss": result.final_loss, "run_id": run_id}
