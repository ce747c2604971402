"""Training commands: one curriculum stage on this machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from components.cli.common import fail, parse_datasets

app = typer.Typer()


@app.command()
def train(
    curriculum: Annotated[Path, typer.Option(help="Curriculum YAML (data_specs/curriculum/*.yaml).")],
    stage: Annotated[str, typer.Option(help="Stage name in the curriculum.")],
    dataset: Annotated[list[str], typer.Option(help="NAME=DIR of an ingested dataset; repeat per dataset.")],
    tokenizer: Annotated[Path, typer.Option(help="tokenizer.json (omnistage tokenizer).")],
    out: Annotated[Path, typer.Option(help="Stage output folder (its checkpoint goes here).")],
    init_from: Annotated[
        str | None, typer.Option(help="Previous stage's checkpoint (weights only): a folder or an s3://, gs:// URI.")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Resume this stage from its own checkpoint in --out.")] = False,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps (smoke runs).")] = None,
    checkpoint_uri: Annotated[
        str | None,
        typer.Option(help="Also publish each checkpoint to this s3:// or gs:// URI (--resume restores from it)."),
    ] = None,
) -> None:
    """Train one curriculum stage (single process; see components/training/stage_runner.py)."""
    from components.specs.curriculum import CurriculumSpec
    from components.specs.loading import SpecError
    from components.training.stage_runner import StageRun, run_stage

    datasets = parse_datasets(dataset)
    try:
        spec = CurriculumSpec.load(curriculum)
        result = run_stage(StageRun(spec, stage, datasets, tokenizer, out, init_from, resume, max_steps,
                                    checkpoint_uri=checkpoint_uri))  # fmt: skip
    except (SpecError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    print(json.dumps({"stage": result.stage, "steps": result.steps, "final_loss": result.final_loss,
                      "checkpoint": str(result.checkpoint), "checkpoint_uri": result.checkpoint_uri,
                      "packing_efficiency": result.packing_efficiency,
                      "skipped_too_long": result.skipped_too_long}, indent=2))  # fmt: skip
