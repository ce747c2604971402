"""`airflow dags test retrain_omni` on the tiny setup: the curriculum pipeline through kfp.local ending in
evaluate -> gate -> promote, then the same data version again (skipped), then the MLflow UI in headless
Chromium showing the `champion` alias. One mini run (module fixture) serves all three. The curriculum is
tiny.yaml's text stage chained to its multimodal stage (what the gate's text and image suites need): each
kfp.local step costs ~15 s of process start and imports, and every tiny stage is run chained in
tests/components/training/test_tiny_curriculum.py."""

import json
import subprocess

import pytest
import yaml

from tests.conftest import REPO_ROOT, copy_migrated_db
from tests.dags.conftest import AIRFLOW, airflow_home_env

MODEL = "omni-dag-test"


def _dags_test(env, conf):
    run = subprocess.run([str(AIRFLOW), "dags", "test", "retrain_omni", "-c", json.dumps(conf)], env=env,
                         capture_output=True, text=True, timeout=1200, cwd=REPO_ROOT)  # fmt: skip
    return run.returncode, run.stdout + run.stderr


@pytest.fixture(scope="module")
def mini_run(tiny_dataset, tmp_path_factory, migrated_airflow_db):
    root = tmp_path_factory.mktemp("retrain")
    home = root / "airflow"
    copy_migrated_db(migrated_airflow_db, home / "airflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    env = dict(airflow_home_env(home), MLFLOW_TRACKING_URI=uri)
    curriculum = yaml.safe_load((REPO_ROOT / "data_specs" / "curriculum" / "tiny.yaml").read_text())
    stages = {stage["name"]: stage for stage in curriculum["stages"]}
    curriculum["stages"] = [stages["stage0-text"], {**stages["stage2-multimodal"], "init_from": "stage0-text"}]
    (root / "curriculum.yaml").write_text(yaml.safe_dump(curriculum, sort_keys=False))
    gate = root / "gate.yaml"  # lenient floors: one training step per stage still promotes the first model
    gate.write_text(yaml.safe_dump({"name": "dag-test", "model_name": MODEL, "suites": ["text", "image"],
                                    "floors": {"text": 1e6}, "require_min_items": False}))  # tiny corpus  # fmt: skip
    conf = {"dataset": "demo", "dataset_dir": str(tiny_dataset), "tokenizer": str(tiny_dataset / "tokenizer.json"),
            "gate": str(gate), "pipeline_root": str(root / "pipeline"), "max_steps": 1,
            "curriculum": str(root / "curriculum.yaml"),
            "repo": str(REPO_ROOT)}  # fmt: skip
    first = _dags_test(env, conf)
    second = _dags_test(env, conf) if first[0] == 0 else (None, "")
    return {"uri": uri, "root": root, "first": first, "second": second, "dataset": tiny_dataset}


@pytest.mark.slow
def test_retrain_dag_trains_evaluates_gates_and_promotes(mini_run):
    from components.promotion.registry import registry_status
    from components.specs.curriculum import CurriculumSpec

    code, log = mini_run["first"]
    assert code == 0, log[-4000:]
    assert "state=success" in log
    status = registry_status(MODEL, mini_run["uri"])
    assert status["champion"]["version"] == "1" and status["last_decision"]["status"] == "promoted"
    assert status["champion"]["data_version"]
    checkpoints = list((mini_run["root"] / "pipeline").rglob("checkpoint/meta.json"))
    stages = len(CurriculumSpec.load(mini_run["root"] / "curriculum.yaml").stages)
    assert stages == 2
    assert len(checkpoints) == stages  # one per curriculum stage, chained through kfp.local
    import mlflow

    client = mlflow.MlflowClient(mini_run["uri"])
    runs = client.search_runs([client.get_experiment_by_name("omnistage-curriculum").experiment_id])
    stage_runs = [r for r in runs if r.data.tags.get("omnistage.stage")]
    assert len(stage_runs) == stages
    parents = {r.data.tags.get("mlflow.parentRunId") for r in stage_runs}
    assert len(parents) == 1 and None not in parents  # every stage under one curriculum run
    assert status["champion"]["run_id"] in parents


@pytest.mark.slow
def test_retrain_dag_skips_a_data_version_it_already_trained(mini_run):
    from components.promotion.registry import registry_status

    code, log = mini_run["second"]
    assert code == 0, log[-4000:]
    assert "already trained by run" in log
    assert registry_status(MODEL, mini_run["uri"])["champion"]["version"] == "1"  # nothing new registered


@pytest.mark.slow
def test_mlflow_ui_shows_the_champion_alias(mini_run):
    from components.headless_chromium import chromium, render_page
    from components.tracking.experiments import local_artifact_root
    from components.tracking.mlflow_ui import mlflow_ui

    try:
        chromium()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    artifacts = local_artifact_root(mini_run["uri"])
    with mlflow_ui(mini_run["uri"], artifacts) as url:
        page = render_page(f"{url}/#/models/{MODEL}")
    assert MODEL in page
    assert "@ champion" in page or "champion" in page.split(MODEL, 1)[1]
