"""Every stage of tiny.yaml, one step each, chained as the pipeline chains them (each initialised from the
checkpoint of the stage it names), in this process: a stage whose settings, data or modules broke fails here
in seconds rather than in `make run`. The pipeline around the stages (kfp.local, MLflow, the gate) is
tests/dags/test_retrain_dag_run.py, on a shorter curriculum."""

import pytest

from components.specs.curriculum import CurriculumSpec
from components.training.stage_runner import StageRun, run_stage
from tests.conftest import REPO_ROOT

TINY = CurriculumSpec.load(REPO_ROOT / "data_specs" / "curriculum" / "tiny.yaml")


@pytest.mark.slow
def test_every_tiny_stage_trains_one_step_from_the_stage_it_names(tiny_dataset, tmp_path):
    checkpoints = {}
    for stage in TINY.stages:
        run = StageRun(TINY, stage.name, {"demo": tiny_dataset}, tiny_dataset / "tokenizer.json",
                       tmp_path / stage.name, init_from=checkpoints.get(stage.init_from), max_steps=1)  # fmt: skip
        assert stage.init_from is None or run.init_from is not None, f"{stage.name}: {stage.init_from} not run yet"
        result = run_stage(run)
        assert result.steps == 1 and result.final_loss == result.final_loss, stage.name  # a finite, real step
        checkpoints[stage.name] = result.checkpoint
    assert list(checkpoints) == [s.name for s in TINY.stages]
