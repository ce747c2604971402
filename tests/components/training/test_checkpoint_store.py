"""Checkpoints and stage inputs on object storage (moto_server on 127.0.0.1): publication is all-or-nothing,
a KFP stage step trains from `NAME@VERSION` and a tokenizer URI, publishes its checkpoint, the next stage
initialises from that URI, and MLflow's registry points at it without holding a copy."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from components.training.checkpoint_store import MARKER, fetch_checkpoint, publish_checkpoint
from tests.conftest import REPO_ROOT, mlflow_db_copy
from tests.s3_server import list_objects, read_object, s3_client

CURRICULUM = str(REPO_ROOT / "data_specs" / "curriculum" / "tiny.yaml")
PUBLISH = (
    "import sys; from pathlib import Path; from components.training.checkpoint_store import publish_checkpoint; "
    "publish_checkpoint(Path(sys.argv[1]), sys.argv[2])"
)


def _fake_checkpoint(folder, num_files=80):
    (folder / "weights").mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"preset": "tiny", "step": 1}))
    for i in range(num_files):
        (folder / "weights" / f"shard_{i:03d}.distcp").write_bytes(bytes([i % 251]) * 4096)
    return folder


def test_publisher_killed_mid_upload_leaves_no_readable_checkpoint(s3_bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("OMNISTAGE_CHECKPOINT_CACHE", str(tmp_path / "cache"))
    folder = _fake_checkpoint(tmp_path / "ckpt")
    uri = f"{s3_bucket}/runs/a/checkpoint"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", PUBLISH, str(folder), uri], env=env)
    deadline = time.monotonic() + 60
    while not list_objects(uri) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # the first object is visible: kill the publisher there
    proc.wait()
    visible = list_objects(uri)
    assert visible and len(visible) < 81, "kill the publisher while it uploads (the fixture is too small)"
    assert MARKER not in visible, "a killed upload must not look complete"
    with pytest.raises(FileNotFoundError, match="COMPLETE is missing"):
        fetch_checkpoint(uri)

    # Finished, the marker lists every file; a reader gets a verified copy; a changed object is refused.
    manifest = publish_checkpoint(folder, uri)
    assert set(list_objects(uri)) == {*manifest["files"], MARKER}
    local = fetch_checkpoint(uri)
    assert (local / "weights" / "shard_007.distcp").read_bytes() == bytes([7]) * 4096
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    s3_client().put_object(Bucket=bucket, Key=f"{prefix}/weights/shard_007.distcp", Body=b"tampered")
    with pytest.raises(ValueError, match="does not match its manifest"):
        fetch_checkpoint(uri, into=tmp_path / "fresh")


@pytest.mark.slow
def test_stage_steps_on_object_storage_chain_by_uri_and_register_the_uri(tiny_dataset, s3_bucket, tmp_path,
                                                                         monkeypatch, migrated_mlflow_db):  # fmt: skip
    from mlflow import MlflowClient

    from components.pipelines.stage_entry import POINTER, run_stage_step
    from components.promotion.registry import register_candidate
    from components.tracking.lineage import lineage_back
    from components.tracking.models import resolve_model
    from tests.components.training.test_stage_runner import _weights
    from tests.stage_inputs_on_s3 import put_stage_inputs

    version, tokenizer, env = put_stage_inputs(tiny_dataset, s3_bucket, tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    tracking = mlflow_db_copy(migrated_mlflow_db, tmp_path / "mlflow.db")
    common = dict(datasets=json.dumps({"demo": f"tiny@{version}"}), tokenizer=tokenizer,
                  tracking_uri=tracking, parent_run_id="offline", max_steps=1)  # fmt: skip

    first = run_stage_step(CURRICULUM, "stage0-text", out=str(tmp_path / "a0"), **common)
    uri = (tmp_path / "a0" / POINTER).read_text()
    assert uri.startswith(f"{s3_bucket}/ckpt/tiny/") and uri.endswith("/stage0-text/checkpoint")
    published = json.loads(read_object(uri, MARKER))
    assert set(list_objects(uri)) == {*published["files"], MARKER}
    assert "meta.json" in published["files"] and "tokenizer.json" in published["files"]

    # The dataset was restored by its version: the same shard bytes; a second materialisation downloads nothing.
    from components.versioning.dataset_cache import materialise_dataset

    restored = tmp_path / "datasets" / "tiny" / version.removesuffix(".dir")
    shards = sorted((restored / "shards").glob("*.tar"))
    assert [p.read_bytes() for p in shards] == [p.read_bytes() for p in sorted((tiny_dataset / "shards").glob("*.tar"))]
    before = {p: p.stat().st_mtime_ns for p in restored.rglob("*")}
    assert materialise_dataset("tiny", version) == restored
    assert {p: p.stat().st_mtime_ns for p in restored.rglob("*")} == before

    # The next stage initialises from the URI behind the artifact's pointer (downloaded into the cache).
    second = run_stage_step(CURRICULUM, "stage1-text-speech", out=str(tmp_path / "a1"),
                            init_from=str(tmp_path / "a0"), **common)  # fmt: skip
    uri1 = (tmp_path / "a1" / POINTER).read_text()
    before_w = _weights(fetch_checkpoint(uri))
    after_w = _weights(fetch_checkpoint(uri1))
    frozen = [k for k in after_w if k.startswith("vit.") and "projector" not in k]
    assert frozen and all((after_w[k] == before_w[k]).all() for k in frozen)  # vit: frozen, from stage 0's URI

    # MLflow holds URIs, not copies; the registry version's source is the URI; models:/ resolves to the cache.
    client = MlflowClient(tracking)
    for run_id, published_uri in ((first["run_id"], uri), (second["run_id"], uri1)):
        run = client.get_run(run_id)
        assert run.data.tags["omnistage.checkpoint_uri"] == published_uri
        assert client.list_artifacts(run_id) == []
        assert run.inputs.dataset_inputs[0].dataset.digest == version
    assert client.get_run(second["run_id"]).data.tags["omnistage.init_from"] == uri
    # The version's DVC remote is recorded with it: `dataset pull NAME VERSION` restores from it by default (the
    # repository given has no DVC remote of its own).
    from components.cli.data import dataset_pull

    assert client.get_run(first["run_id"]).data.tags["omnistage.dvc_remote.tiny"] == f"{s3_bucket}/dvc"
    dataset_pull("tiny", version, out=tmp_path / "pulled", remote=None, repo=tmp_path, tracking_uri=tracking)
    assert sorted(p.name for p in (tmp_path / "pulled").glob("*.tar")) == [p.name for p in shards]
    assert not any(p.is_file() for p in (tmp_path / "mlartifacts").rglob("*"))  # nothing copied into MLflow
    name, number = register_candidate(uri1, "omni-tiny", tracking)
    assert client.get_model_version(name, number).source == uri1
    resolved = resolve_model(f"models:/{name}/{number}", tracking)
    assert resolved.checkpoint == fetch_checkpoint(uri1) and (resolved.checkpoint / "meta.json").is_file()
    stages = [s["stage"] for s in lineage_back(f"models:/{name}/{number}", tracking)["stages"]]
    assert stages == ["stage1-text-speech", "stage0-text"]  # lineage walks the URIs back to stage 0

    # A retried stage on a fresh node (empty output folder) resumes from its published checkpoint.
    from components.specs.curriculum import CurriculumSpec
    from components.training.stage_runner import StageRun, run_stage

    resumed = run_stage(StageRun(CurriculumSpec.load(CURRICULUM), "stage0-text", {"demo": restored},
                                 tiny_dataset / "tokenizer.json", tmp_path / "fresh-node", resume=True, max_steps=2,
                                 checkpoint_uri=uri))  # fmt: skip
    assert resumed.steps == 2 and len(resumed.history) == 1  # one step trained: step 1 came from the URI
    assert json.loads(read_object(uri, "meta.json"))["step"] == 2  # and the new save was published there


def test_mlflow_references_a_checkpoint_on_the_volume_or_over_the_limit_and_copies_a_small_one(tmp_path, monkeypatch,
                                                                                          migrated_mlflow_db):
    """No full-size copy through MLflow: a folder on the shared volume or over the size limit is recorded as a
    pointer artifact (the registry source) that models:/ follows; a small laptop checkpoint is still copied."""
    import shutil
    from types import SimpleNamespace

    import mlflow

    from components.promotion.registry import register_candidate
    from components.tracking import mlflow_stage
    from components.tracking.experiments import CURRICULUM_EXPERIMENT, use_experiment
    from components.tracking.models import resolve_model

    tracking = mlflow_db_copy(migrated_mlflow_db, tmp_path / "mlflow.db")
    use_experiment(mlflow, CURRICULUM_EXPERIMENT, tracking)
    monkeypatch.setenv("OMNISTAGE_CHECKPOINT_ROOT", str(tmp_path / "volume"))
    default_limit = mlflow_stage.LARGE_LOCAL_CHECKPOINT_BYTES
    cases = {"volume": (tmp_path / "volume" / "run-1" / "stage0", default_limit),
             "large": (tmp_path / "large", 4096), "laptop": (tmp_path / "laptop", default_limit)}
    resolved = {}
    for case, (folder, limit) in cases.items():
        _fake_checkpoint(folder, num_files=2)
        monkeypatch.setattr(mlflow_stage, "LARGE_LOCAL_CHECKPOINT_BYTES", limit)
        with mlflow.start_run() as run:
            mlflow.set_tags(mlflow_stage._checkpoint_tags(mlflow, SimpleNamespace(checkpoint=folder, steps=3,
                                                                                  checkpoint_uri=None)))  # fmt: skip
        tags = mlflow.MlflowClient(tracking).get_run(run.info.run_id).data.tags
        files = sorted(p.relative_to(tmp_path / "mlartifacts") for p in (tmp_path / "mlartifacts").rglob("*")
                       if p.is_file() and run.info.run_id in str(p))  # fmt: skip
        name, number = register_candidate(str(folder), f"omni-{case}", tracking)
        mlflow.MlflowClient(tracking).set_registered_model_alias(name, "champion", number)
        resolved[case] = resolve_model(f"models:/{name}@champion", tracking)
        if case == "laptop":  # copied: every file
            assert tags["omnistage.checkpoint_storage"] == "copy" and len(files) == 3
            assert resolved[case].checkpoint != folder and (resolved[case].checkpoint / "meta.json").is_file()
        else:  # one pointer file naming the folder; models:/ resolves to the folder itself
            assert tags["omnistage.checkpoint_storage"] == "reference"
            assert [p.name for p in files] == ["checkpoint.uri"], files
            assert resolved[case].checkpoint == folder.resolve()
        assert tags["omnistage.checkpoint"] == str(folder.resolve())

    shutil.rmtree(cases["large"][0])  # a referenced folder that is gone is named, with the fix
    with pytest.raises(FileNotFoundError, match=r"referenced, not copied, and .*large is not on this machine"):
        resolve_model("models:/omni-large@champion", tracking)
    shutil.rmtree(cases["laptop"][0])  # the laptop flow: the champion loads from MLflow's copy after the folder is gone
    assert (resolve_model("models:/omni-laptop@champion", tracking).checkpoint / "meta.json").is_file()
