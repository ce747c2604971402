"""MLflow (SQLite store) tracking of two chained stages, lineage both ways, and an unreachable server."""

import json

import pyarrow.parquet as pq
import pytest

from components.specs.curriculum import CurriculumSpec
from components.tracking.lineage import lineage_back, lineage_forward
from components.tracking.mlflow_stage import FALLBACK_NAME, replay_fallback, tracked_stage
from components.training.stage_runner import StageRun
from tests.conftest import REPO_ROOT, mlflow_db_copy

CURRICULUM = CurriculumSpec.load(REPO_ROOT / "data_specs" / "curriculum" / "tiny.yaml")


@pytest.fixture(scope="module")
def dataset(tiny_dataset):
    return tiny_dataset


def _stage(dataset, out, stage, init_from=None):
    return StageRun(CURRICULUM, stage, {"demo": dataset}, dataset / "tokenizer.json", out, init_from=init_from,
                    max_steps=2)  # fmt: skip


@pytest.mark.slow
def test_chained_stages_are_tracked_and_traceable_both_ways(dataset, tmp_path, migrated_mlflow_db):
    import mlflow

    uri = mlflow_db_copy(migrated_mlflow_db, tmp_path / "mlflow.db")
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("omnistage-curriculum")
    with mlflow.start_run(run_name="tiny-curriculum") as parent:
        first, first_id = tracked_stage(_stage(dataset, tmp_path / "s0", "stage0-text"), uri, parent.info.run_id)
        second, second_id = tracked_stage(
            _stage(dataset, tmp_path / "s1", "stage1-text-speech", first.checkpoint), uri, parent.info.run_id
        )
    client = mlflow.MlflowClient(uri)
    run = client.get_run(second_id)
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run.data.params["optimizer.lr"] == "0.002" and "loss" in run.data.metrics
    assert [m.step for m in client.get_metric_history(second_id, "loss")] == [1, 2]
    client.create_registered_model("omni-tiny")
    version = client.create_model_version("omni-tiny", f"{run.info.artifact_uri}/checkpoints", run_id=second_id)

    back = lineage_back(f"models:/omni-tiny/{version.version}", uri)
    assert [s["stage"] for s in back["stages"]] == ["stage1-text-speech", "stage0-text"]
    manifest = pq.read_table(dataset / "manifest.parquet").to_pylist()
    files = back["stages"][1]["datasets"][0]["files"]
    assert {f["sha256"] for f in files} == {r["sha256"] for r in manifest}

    raw = manifest[0]["path"]
    forward = lineage_forward(raw, uri)
    assert {h["run_id"] for h in forward["trained_on_by"]} == {first_id, second_id}
    assert any(h["model_versions"] for h in forward["trained_on_by"])
    assert lineage_forward("0" * 64, uri)["trained_on_by"] == []


@pytest.mark.slow
def test_unreachable_mlflow_buffers_and_replays(dataset, tmp_path, monkeypatch, migrated_mlflow_db):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    result, run_id = tracked_stage(_stage(dataset, tmp_path / "off", "stage0-text"), "http://127.0.0.1:9")
    assert run_id == "offline" and result.steps == 2
    fallback = tmp_path / "off" / FALLBACK_NAME
    events = [json.loads(line) for line in fallback.read_text().splitlines()]
    assert [e["call"] for e in events] == ["start", "metrics", "metrics", "end"]
    uri = mlflow_db_copy(migrated_mlflow_db, tmp_path / "later.db")
    replayed = replay_fallback(fallback, uri)
    import mlflow

    assert len(mlflow.MlflowClient(uri).get_metric_history(replayed, "loss")) == 2


def test_the_curriculum_run_spans_its_stages_and_shows_a_failed_one(dataset, tmp_path, migrated_mlflow_db):
    import mlflow

    from components.tracking.mlflow_stage import start_parent_run

    uri = mlflow_db_copy(migrated_mlflow_db, tmp_path / "mlflow.db")
    parent_id = start_parent_run("tiny.yaml", uri)
    client = mlflow.MlflowClient(uri)
    started = client.get_run(parent_id).info
    _, stage_id = tracked_stage(_stage(dataset, tmp_path / "s0", "stage0-text"), uri, parent_id)
    parent, stage = client.get_run(parent_id).info, client.get_run(stage_id).info
    assert parent.status == "FINISHED" and parent.end_time >= stage.end_time > started.end_time

    broken = _stage(dataset, tmp_path / "s1", "stage1-text-speech", init_from=tmp_path / "no-checkpoint")
    with pytest.raises(FileNotFoundError):
        tracked_stage(broken, uri, parent_id)
    assert client.get_run(parent_id).info.status == "FAILED"

    held_open = client.create_run(started.experiment_id).info.run_id  # a caller's own parent: theirs to end
    with pytest.raises(FileNotFoundError):
        tracked_stage(broken, uri, held_open)
    assert client.get_run(held_open).info.status == "RUNNING"
