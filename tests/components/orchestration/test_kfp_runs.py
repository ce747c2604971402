"""`omnistage pipeline submit/status/cancel` against the stand-in KFP API (kfp_standin.py; no KFP backend
runs here): a retried submit finds the run it already submitted instead of submitting again, including when
the API accepted the first submission but its answer was lost; a cancelled run does not count, so the next
submit is a fresh run; the bearer token reaches the API; the pinned data version is in the training key."""

import json
import os
import subprocess

import pytest

from tests.components.orchestration.kfp_standin import KfpStandin
from tests.conftest import REPO_ROOT, mlflow_db_copy

TOKEN = "s3cret-token"
VERSION, OTHER_VERSION = "0a1b2c3d4e5f60718293a4b5c6d7e8f9.dir", "ffeeddccbbaa99887766554433221100.dir"


def run_cli(*args: str, tmp_path, token: str = TOKEN) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMNISTAGE_KFP_TOKEN=token, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    return subprocess.run([str(REPO_ROOT / ".venv/bin/omnistage"), *args], capture_output=True, text=True,
                          env=env, cwd=REPO_ROOT, timeout=120)  # fmt: skip


def omnistage(*args: str, tmp_path) -> dict:
    proc = run_cli(*args, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


SUBMIT = ["pipeline", "submit", "--curriculum", "data_specs/curriculum/tiny.yaml", "--gate",
          "data_specs/gates/default.yaml", "--dataset", "demo=s3://omnistage-data/demo", "--tokenizer",
          "s3://omnistage-data/tokenizer.json", "--max-steps", "1", "--force"]  # fmt: skip


def submit(kfp: KfpStandin, tmp_path, version: str = VERSION) -> dict:
    return omnistage(*SUBMIT, "--kfp-host", kfp.url, "--dataset-version", f"demo={version}", tmp_path=tmp_path)


@pytest.fixture(scope="module")
def lost_answer_then_retry(tmp_path_factory, migrated_mlflow_db):
    """The first submit is accepted by the API but answered 503 (the command fails, as an Airflow try
    would); the retry and a third call must find that run."""
    tmp_path = tmp_path_factory.mktemp("kfp_runs")
    mlflow_db_copy(migrated_mlflow_db, tmp_path / "mlflow.db")  # run_cli's tracking DB
    with KfpStandin(run_states=["RUNNING"], lose_create_responses=1, token=TOKEN) as kfp:
        first = run_cli(*SUBMIT, "--kfp-host", kfp.url, "--dataset-version", f"demo={VERSION}", tmp_path=tmp_path)
        retry = submit(kfp, tmp_path)
        again = submit(kfp, tmp_path)
        yield {"kfp": kfp, "first": first, "retry": retry, "again": again, "tmp": tmp_path}


def test_a_retried_submit_finds_the_run_instead_of_submitting_again(lost_answer_then_retry):
    kfp, retry, again = (lost_answer_then_retry[k] for k in ("kfp", "retry", "again"))
    assert lost_answer_then_retry["first"].returncode != 0
    assert "503" in lost_answer_then_retry["first"].stderr
    assert len(kfp.submissions) == 1  # the lost answer's run is the only one
    assert retry["reused"] and again["reused"]
    assert retry["run_id"] == again["run_id"] == next(iter(kfp.runs))
    submitted = kfp.submissions[0]
    assert submitted["display_name"] == f"omnistage-retrain-{retry['training_key']}"
    assert retry["data_versions"] == {"demo": VERSION}
    parameters = submitted["runtime_config"]["parameters"]
    assert parameters["training_key"] == retry["training_key"]
    # The stage pods restore the dataset by the version the key was built from, not from a path or URI.
    assert json.loads(parameters["datasets"]) == {"demo": f"demo@{VERSION}"}
    assert parameters["tokenizer"] == "s3://omnistage-data/tokenizer.json"
    experiment = kfp.experiments[submitted["experiment_id"]]
    assert experiment["display_name"] == "omnistage-tiny"
    # With Kubernetes settings (node selectors, tolerations) kfp sends {pipeline_spec, platform_spec}.
    assert submitted["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "omnistage-tiny"


def test_another_data_version_is_another_run_and_a_cancelled_run_does_not_count(lost_answer_then_retry):
    kfp, tmp_path, first = lost_answer_then_retry["kfp"], lost_answer_then_retry["tmp"], lost_answer_then_retry["retry"]
    other = submit(kfp, tmp_path, version=OTHER_VERSION)
    assert not other["reused"] and other["training_key"] != first["training_key"]
    cancelled = omnistage("pipeline", "cancel", first["run_id"], "--kfp-host", kfp.url, tmp_path=tmp_path)
    assert cancelled["cancelled"] and cancelled["state"] in ("CANCELING", "CANCELED")
    assert kfp.terminations == [first["run_id"]]
    status = omnistage("pipeline", "status", first["run_id"], "--kfp-host", kfp.url, tmp_path=tmp_path)
    assert status["state"] == "CANCELED" and status["final"]
    fresh = submit(kfp, tmp_path)
    assert not fresh["reused"] and fresh["run_id"] != first["run_id"]
    assert fresh["training_key"] == first["training_key"]
    assert len(kfp.submissions) == 3


def test_a_wrong_token_is_refused_at_once_with_the_host_named():
    from components.orchestration.kfp_runs import KfpRunError, KfpTarget, run_state

    with KfpStandin(token=TOKEN) as kfp:
        with pytest.raises(KfpRunError, match=f"KFP API at {kfp.url} answered 401: the token"):
            run_state(KfpTarget(kfp.url, token="another-token"), "some-run")
        with pytest.raises(KfpRunError, match=f"KFP API at {kfp.url} answered 404 Not Found"):
            run_state(KfpTarget(kfp.url, token=TOKEN), "some-run")


def test_a_cluster_run_refuses_a_dataset_without_a_dvc_version(tmp_path):
    from components.orchestration.retrain import RetrainRequest, pipeline_arguments

    request = RetrainRequest(REPO_ROOT / "data_specs/curriculum/tiny.yaml", REPO_ROOT / "data_specs/gates/default.yaml",
                             {"demo": tmp_path / "demo"}, tmp_path / "tok.json", "http://mlflow", tmp_path)  # fmt: skip
    for version in (None, "abc123.dir"):
        with pytest.raises(ValueError, match=f"dataset demo: a cluster run restores .*{tmp_path / 'demo'}.*"
                                             "omnistage dataset commit"):  # fmt: skip
            pipeline_arguments(request, "key", {"demo": version})
