"""Local parity: under kfp.local a stage of 2 processes runs the node command a TrainJob's nodes run on a
cluster (`omnistage train ... --nproc-per-node 2`: torchrun, 2 gloo ranks on CPU), only the submitter
differs; its checkpoint chains to the next stage and rank 0 tracks it under the curriculum's parent run.

The run uses the cluster's data plane against moto_server on 127.0.0.1: the dataset as `NAME@VERSION` on a
DVC S3 remote, the tokenizer as an s3:// URI, checkpoints published under `OMNISTAGE_CHECKPOINT_URI`; the
node entry point makes the inputs local itself, as a TrainJob's nodes do."""

import json

import pytest
import yaml

from components.pipelines.curriculum_pipeline import compile_pipeline, run_locally
from tests.conftest import REPO_ROOT, mlflow_db_copy

TINY = REPO_ROOT / "data_specs" / "curriculum" / "tiny.yaml"
FULL = REPO_ROOT / "data_specs" / "curriculum" / "longcat_omni.yaml"


def _two_process_curriculum(folder):
    """tiny.yaml's first two stages (text, then the audio encoder's CTC stage); stage0 on 2 processes (global batch 2:
    one sequence per rank)."""
    doc = yaml.safe_load(TINY.read_text())
    doc["name"], doc["stages"] = "tiny-2proc", doc["stages"][:2]
    doc["stages"][0]["global_batch_size"] = 2
    doc["stages"][0]["resources"]["processes_per_node"] = 2
    path = folder / "tiny_2proc.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def local_run(tiny_dataset, tmp_path_factory, s3_endpoint, migrated_mlflow_db):
    from tests.s3_server import create_bucket
    from tests.stage_inputs_on_s3 import put_stage_inputs

    tmp = tmp_path_factory.mktemp("parity")
    bucket = create_bucket()
    version, tokenizer, stage_env = put_stage_inputs(tiny_dataset, bucket, tmp)
    uri = mlflow_db_copy(migrated_mlflow_db, tmp / "mlflow.db")
    with pytest.MonkeyPatch.context() as env:
        for name, value in stage_env.items():
            env.setenv(name, value)
        run_locally(_two_process_curriculum(tmp), {"demo": f"tiny@{version}"}, tokenizer, uri,
                    tmp / "pipeline", max_steps=1)  # fmt: skip
    return tmp, uri, bucket, version


@pytest.mark.slow
def test_a_two_process_stage_runs_two_ranks_under_kfp_local_and_chains_to_the_next(local_run):
    import mlflow

    from components.tracking.experiments import CURRICULUM_EXPERIMENT
    from components.training.checkpoint_store import MARKER
    from tests.s3_server import list_objects, read_object

    tmp, uri, bucket, version = local_run
    metas = {}
    for path in (tmp / "staging").rglob("meta.json"):  # staged here, published to the bucket
        meta = json.loads(path.read_text())
        metas[meta["stage"]] = (meta, path.parent)
    assert metas["stage0-text"][0]["data_parallel"] == 2  # written by a 2-rank run only
    assert metas["stage0b-audio-ctc"][0]["data_parallel"] == 1 and metas["stage0b-audio-ctc"][0]["step"] == 1
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(CURRICULUM_EXPERIMENT).experiment_id])
    stages = {r.data.tags["omnistage.stage"]: r for r in runs if r.data.tags.get("omnistage.stage")}
    assert sorted(stages) == ["stage0-text", "stage0b-audio-ctc"]  # rank 1 opened no run of its own
    assert len({r.data.tags.get("mlflow.parentRunId") for r in stages.values()} - {None}) == 1
    assert [m.step for m in client.get_metric_history(stages["stage0-text"].info.run_id, "loss")] == [1]

    # The 2-rank stage read the dataset by its version (restored into the node cache from the DVC remote) and
    # rank 0 published its checkpoint to the bucket; the next stage initialised from that URI.
    published = stages["stage0-text"].data.tags["omnistage.checkpoint_uri"]
    assert published.startswith(f"{bucket}/ckpt/tiny-2proc/") and published.endswith("/stage0-text/checkpoint")
    assert json.loads(read_object(published, "meta.json"))["data_parallel"] == 2
    assert MARKER in list_objects(published)
    assert stages["stage0-text"].inputs.dataset_inputs[0].dataset.digest == version
    assert (tmp / "datasets" / "tiny" / version.removesuffix(".dir") / "stats.json").is_file()
    assert stages["stage0b-audio-ctc"].data.tags["omnistage.init_from"] == published


def test_compiled_for_a_cluster_the_same_stage_is_a_trainjob_launcher(tmp_path):
    spec = next(yaml.safe_load_all(compile_pipeline(_two_process_curriculum(tmp_path), tmp_path / "p.yaml")
                                   .read_text()))  # fmt: skip
    tasks = {t["taskInfo"]["name"]: t for t in spec["root"]["dag"]["tasks"].values()}
    launcher = tasks["stage0-text"]
    assert launcher["componentRef"]["name"].startswith("comp-launch-stage")
    assert launcher["inputs"]["parameters"]["submitter"]["runtimeValue"]["constant"] == "trainjob"
    assert tasks["stage0b-audio-ctc"]["componentRef"]["name"] == "comp-train-next-stage"  # one process: a pod


def test_a_multi_node_stage_is_refused_locally_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match=r"stage 'stage0-text' asks for resources.nodes 64; a local run"):
        run_locally(FULL, {}, tmp_path / "tokenizer.json", "sqlite:///x.db", tmp_path / "pipeline")
    assert not (tmp_path / "pipeline").exists()
