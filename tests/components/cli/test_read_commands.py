"""The commands that only read state (`status`, `lineage`, `--help`, `dataset show`, `pipeline compile`):
no torch or megatron imported, clear errors for what a user gets wrong, "no previous champion" in words.

The registry they read is a real SQLite MLflow store written through MLflow's API the way a curriculum
run, an evaluation and the gate write it (no training: these commands must not need a model).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, mlflow_db_copy

MODEL = "omni-cli-test"

# Runs each command in one fresh interpreter and reports, after each, whether torch/megatron got imported.
PROBE = """
import json, sys
from components.cli import app
report = []
for args in json.loads(sys.argv[1]):
    try:
        app(args, standalone_mode=False)
        code = 0
    except SystemExit as exc:
        code = exc.code
    report.append({"args": args, "code": code, "heavy": sorted(m for m in ("torch", "megatron") if m in sys.modules)})
print("PROBE" + json.dumps(report))
"""


@pytest.fixture(scope="module")
def registry_store(tmp_path_factory, migrated_mlflow_db):
    """A champion (v1, promoted against no champion) with a curriculum stage run that read one dataset."""
    import mlflow
    import pandas as pd

    from components.promotion.registry import register_candidate
    from components.tracking.experiments import CURRICULUM_EXPERIMENT, mlflow_client, use_experiment

    root = tmp_path_factory.mktemp("registry")
    uri = mlflow_db_copy(migrated_mlflow_db, root / "mlflow.db")
    dataset = root / "datasets" / "demo"
    dataset.mkdir(parents=True)
    raw = root / "raw.wav"
    raw.write_bytes(b"RIFF-not-really-audio")
    import hashlib

    sha = hashlib.sha256(raw.read_bytes()).hexdigest()
    manifest = pd.DataFrame([{"path": str(raw), "sha256": sha, "split": "train", "task_family": "asr"}])
    manifest.to_parquet(dataset / "manifest.parquet")
    (dataset / "stats.json").write_text(
        json.dumps(
            {
                "dataset": "demo",
                "inputs": 1,
                "accepted": 1,
                "version": {"version": "abc123.dir", "git_commit": "f" * 40},
            }
        )
    )
    use_experiment(mlflow, CURRICULUM_EXPERIMENT, uri)
    with mlflow.start_run(
        run_name="stage0",
        tags={"omnistage.stage": "stage0", "omnistage.init_from": "none", "omnistage.checkpoint": str(root / "ckpt")},
    ) as run:
        mlflow.log_input(
            mlflow.data.from_pandas(manifest, source=str(dataset), name="demo", digest="abc123.dir"), context="train"
        )
    register_candidate(f"runs:/{run.info.run_id}/checkpoints/step-1", MODEL, uri)
    client = mlflow_client(uri)
    client.set_registered_model_alias(MODEL, "champion", "1")
    for key, value in {
        "omnistage.gate.name": "default",
        "omnistage.gate.status": "promoted",
        "omnistage.gate.reasons": "[]",
        "omnistage.gate.judged_against": "none",
        "omnistage.gate.decided_at": "1.0",
    }.items():
        client.set_model_version_tag(MODEL, "1", key, value)
    _log_evaluation(mlflow, uri)
    mlflow.set_tracking_uri("")  # keep the test process's global state as it was
    return {"uri": uri, "root": root, "raw": raw, "sha": sha, "dataset": dataset}


def _log_evaluation(mlflow, uri: str) -> None:
    """An evaluation run of v1 as components.evaluation.evaluate logs one: a voice_qa suite with its
    media-blanked control (60 items, 45 right; 12 right with the audio silent) and a text suite."""
    from components.evaluation.results import suite_metrics, summarise
    from components.specs.evals import EvalSuiteSpec
    from components.tracking.experiments import EVALUATION_EXPERIMENT, use_experiment

    data = {"dataset": "demo"}
    voice = EvalSuiteSpec(name="voice_qa", family="voice_qa", metric="accuracy", chance="uniform", data=data)
    text = EvalSuiteSpec(name="text", family="text", metric="perplexity", chance="vocabulary", data=data, min_items=3)
    items = [{"id": f"v{i}", "correct": float(i < 45)} for i in range(60)]
    blanked = [{"id": f"v{i}", "correct": float(i < 12)} for i in range(60)]
    results = [summarise(voice, items, 1 / 19, blanked),
               summarise(text, [{"id": f"t{i}", "nll": 20.0 + i, "tokens": 10} for i in range(3)], 400.0)]  # fmt: skip
    use_experiment(mlflow, EVALUATION_EXPERIMENT, uri)
    with mlflow.start_run(tags={"omnistage.model_name": MODEL, "omnistage.model_version": "1"}):
        mlflow.log_metrics(suite_metrics(results))


def _probe(commands: list[list[str]]) -> list[dict]:
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(commands)], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=180)  # fmt: skip
    line = next((x for x in proc.stdout.splitlines() if x.startswith("PROBE")), None)
    assert line, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(line[len("PROBE") :])


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "components.cli", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120)  # fmt: skip


def test_read_only_commands_import_no_torch(registry_store, tmp_path):
    uri = registry_store["uri"]
    commands = [
        ["--help"],
        ["status", "--name", MODEL, "--tracking-uri", uri],
        ["status", "--name", MODEL, "--tracking-uri", uri, "--json"],
        ["lineage", f"models:/{MODEL}@champion", "--tracking-uri", uri],
        ["lineage", "--input-file", str(registry_store["raw"]), "--tracking-uri", uri],
        ["dataset", "show", str(registry_store["dataset"])],
        ["pipeline", "compile", "--curriculum", str(REPO_ROOT / "data_specs/curriculum/tiny.yaml"),
         "--out", str(tmp_path / "pipeline.yaml")],
    ]  # fmt: skip
    report = _probe(commands)
    assert [r["code"] for r in report] == [0] * len(commands), report
    assert [r["heavy"] for r in report] == [[]] * len(commands), report
    assert (tmp_path / "pipeline.yaml").is_file()


def test_status_names_the_champion_and_says_when_there_was_none_before(registry_store):
    proc = _cli("status", "--name", MODEL, "--tracking-uri", registry_store["uri"])
    assert proc.returncode == 0, proc.stderr
    assert f"champion: {MODEL} v1" in proc.stderr and "data version abc123.dir" in proc.stderr
    assert "judged against no previous champion" in proc.stderr
    assert "vnone" not in proc.stderr and "Transformer Engine" not in proc.stderr
    assert "voice_qa: 0.75" in proc.stderr and "blanked 0.2" in proc.stderr
    status = json.loads(_cli("status", "--name", MODEL, "--tracking-uri", registry_store["uri"], "--json").stdout)
    assert status["last_decision"]["judged_against"] is None
    voice, text = status["champion"]["suites"]["voice_qa"], status["champion"]["suites"]["text"]
    assert voice["value"] == 0.75 and voice["ci_low"] < 0.75 < voice["ci_high"]
    assert voice["chance"] == pytest.approx(1 / 19) and voice["num_items"] == 60 and voice["higher_is_better"]
    assert voice["blanked"]["value"] == 0.2 and voice["blanked"]["ci_low"] < 0.2 < voice["blanked"]["ci_high"]
    assert voice["blanked"]["delta_ci_low"] > 0
    assert text["blanked"] is None and text["higher_is_better"] is False and text["chance"] == 400.0


def test_status_before_any_run_says_what_to_do_and_creates_nothing(tmp_path):
    db = tmp_path / "nowhere" / "mlflow.db"
    proc = _cli("status", "--tracking-uri", f"sqlite:///{db}")
    assert proc.returncode == 2
    assert f"no MLflow store at {db}" in proc.stderr and "make run" in proc.stderr
    assert not db.exists()


def test_lineage_rejects_a_target_that_is_neither_a_file_nor_a_sha256(registry_store):
    uri = registry_store["uri"]
    proc = _cli("lineage", "--input-file", "/no/such/file.wav", "--tracking-uri", uri)
    assert proc.returncode == 2
    assert "'/no/such/file.wav' is neither an existing file nor a sha256" in proc.stderr
    forward = _cli("lineage", "--input-file", registry_store["sha"].upper(), "--tracking-uri", uri)
    assert forward.returncode == 0, forward.stderr
    hits = json.loads(forward.stdout)["trained_on_by"]
    assert [h["model_versions"] for h in hits] == [[{"name": MODEL, "version": "1"}]]


def test_lineage_of_a_model_that_does_not_exist_lists_what_does(registry_store):
    uri = registry_store["uri"]
    proc = _cli("lineage", "models:/no-such-model@champion", "--tracking-uri", uri)
    assert proc.returncode == 2
    assert "no registered model 'no-such-model'" in proc.stderr and MODEL in proc.stderr
    proc = _cli("lineage", f"models:/{MODEL}/7", "--tracking-uri", uri)
    assert proc.returncode == 2
    assert f"model '{MODEL}' has no version 7 (versions: 1; aliases: @champion)" in proc.stderr
