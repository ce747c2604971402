"""A registered model version to serve: a tiny checkpoint (a few training steps) in a SQLite MLflow registry,
aliased champion, and eval clips of each streamed family from the tiny corpus."""

import pytest

from tests.conftest import REPO_ROOT, mlflow_db_copy

MODEL = "omni-serve-test"


@pytest.fixture(scope="package")
def registered(tiny_dataset, tmp_path_factory, migrated_mlflow_db):
    from components.promotion.registry import register_candidate
    from components.specs.curriculum import CurriculumSpec
    from components.tracking.experiments import mlflow_client
    from components.tracking.mlflow_stage import tracked_stage
    from components.training.stage_runner import StageRun

    root = tmp_path_factory.mktemp("serving")
    uri = mlflow_db_copy(migrated_mlflow_db, root / "mlflow.db")
    curriculum = CurriculumSpec.load(REPO_ROOT / "data_specs" / "curriculum" / "tiny.yaml")
    # trained at the context the later stages use, so a clip's prompt fits the model's default session context
    stages = [s.model_copy(update={"seq_length": 1024}) if s.name == "stage0-text" else s for s in curriculum.stages]
    curriculum = curriculum.model_copy(update={"stages": stages})
    run = StageRun(curriculum, "stage0-text", {"demo": tiny_dataset}, tiny_dataset / "tokenizer.json", root / "s0",
                   max_steps=2)  # fmt: skip
    checkpoint = tracked_stage(run, uri)[0].checkpoint
    name, version = register_candidate(str(checkpoint), MODEL, uri)
    mlflow_client(uri).set_registered_model_alias(name, "champion", version)
    return {"uri": uri, "model": f"models:/{MODEL}@champion", "version": version}


@pytest.fixture(scope="package")
def served(registered):
    from components.serving.served_model import load_served_model

    return load_served_model(registered["model"], registered["uri"])


@pytest.fixture(scope="package")
def eval_clips(tiny_dataset) -> dict[str, dict]:
    """The first eval sample (by key) of each streamed family."""
    from components.evaluation.items import split_samples

    families = ("av_qa", "voice_qa", "video_qa", "asr")
    return {family: split_samples(tiny_dataset, family, "eval")[0] for family in families}
