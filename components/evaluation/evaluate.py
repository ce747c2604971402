"""`omnistage evaluate`: score a checkpoint or a registered model version on the eval suites.

    result = evaluate_model("models:/omnistage-omni-tiny/3", {"demo": Path("work/datasets/demo")}, tracking_uri)

Order: resolve the model -> load each suite's held-out items -> contamination check against the
candidate's lineage (fails before any scoring) -> score with bootstrap CIs -> report (markdown + PNG, with
the current champion's numbers beside them when there is one) -> one MLflow run in the
`omnistage-evaluation` experiment holding metrics, results.json and the report, linked to the model
version (tag `omnistage.eval_run`) and to the training run.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from components.evaluation.contamination import check_contamination
from components.evaluation.items import dataset_version, load_eval_samples, manifest_fingerprints, split_metadata
from components.evaluation.records import latest_evaluation
from components.evaluation.report import write_report
from components.evaluation.results import SuiteResult, suite_metrics, write_results
from components.evaluation.scoring import load_checkpoint_model, score_suite
from components.specs.evals import EVALS_DIR, EvalSuiteSpec, load_suites
from components.tracking.experiments import EVALUATION_EXPERIMENT, use_experiment
from components.tracking.lineage import lineage_back
from components.tracking.models import ResolvedModel, resolve_model

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    model: ResolvedModel
    results: list[SuiteResult]
    run_id: str
    report: str  # artifact URI of report.md

    def summary(self) -> dict:
        return {"model": self.model.uri, "name": self.model.name, "version": self.model.version,
                "eval_run_id": self.run_id, "suites": {r.suite: r.summary() for r in self.results}}  # fmt: skip


def _train_transcripts(spec: EvalSuiteSpec, datasets: dict[str, Path]) -> list[str]:
    """The training split's transcripts, for a blind-prior (best constant transcript) chance."""
    if spec.chance != "blind_prior":
        return []
    metas = split_metadata(Path(datasets[spec.data.dataset]), spec.family, "train")
    return [m["labels"]["transcript"] for m in metas if m.get("labels", {}).get("transcript")]


def evaluate_model(model_uri: str, datasets: dict[str, Path], tracking_uri: str, suites: list[str] | None = None,
                   evals_dir: Path = EVALS_DIR, champion_alias: str = "champion") -> Evaluation:  # fmt: skip
    import mlflow
    from mlflow import MlflowClient

    specs = load_suites(evals_dir, suites)
    model = resolve_model(model_uri, tracking_uri)
    samples = {s.name: load_eval_samples(s, datasets) for s in specs}
    fingerprints = {s.name: manifest_fingerprints(Path(datasets[s.data.dataset])) for s in specs}
    eval_items = {name: [{"key": x["json"]["key"], "sha256": x["json"]["sha256"], "modality": x["json"]["modality"],
                          "fingerprint": fingerprints[name].get(x["json"]["sha256"])} for x in items]
                  for name, items in samples.items()}  # fmt: skip
    lineage = lineage_back(model.lineage_target, tracking_uri)
    checked = check_contamination(eval_items, lineage)
    log.info("contamination check: %d eval items vs %d training files, no overlap",
             sum(map(len, eval_items.values())), checked)  # fmt: skip
    loaded = load_checkpoint_model(model.checkpoint)
    vocab = loaded.tokenizer.get_vocab_size()
    results = []
    for spec in specs:
        result = score_suite(loaded, spec, samples[spec.name], vocab, _train_transcripts(spec, datasets))
        if not result.enough_items:
            log.warning("suite %s: %d items, fewer than its min_items %d: the gate's min_items rule will fail it",
                        spec.name, result.num_items, result.min_items)  # fmt: skip
        results.append(result)
    client = MlflowClient(tracking_uri)
    champion: dict[str, dict] = {}
    if model.name:
        try:
            current = client.get_model_version_by_alias(model.name, champion_alias)
            if current.version != model.version:
                champion = latest_evaluation(client, model.name, current.version)
        except Exception:  # no champion yet
            champion = {}
    use_experiment(mlflow, EVALUATION_EXPERIMENT, tracking_uri)
    label = f"{model.name} v{model.version}" if model.name else Path(model.checkpoint).parent.name
    training_run = lineage["stages"][0]["run_id"] if lineage["stages"] else ""
    tags = {"omnistage.model_uri": model_uri, "omnistage.checkpoint": str(model.checkpoint),
            "omnistage.training_run": training_run, "omnistage.model_name": model.name or "",
            "omnistage.model_version": model.version or "",
            "omnistage.data_versions": json.dumps({n: dataset_version(Path(f)) for n, f in datasets.items()}),
            }  # fmt: skip
    with mlflow.start_run(run_name=f"eval {label}", tags=tags) as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_metrics(suite_metrics(results))
        mlflow.log_params({"suites": ",".join(s.name for s in specs), "contamination_checked_files": checked})
        write_results(results, Path(tmp) / "results.json")
        classes = {s.name: list(s.choices) for s in specs if s.metric == "accuracy" and s.choices}
        facts = {"model": model_uri, "checkpoint": str(model.checkpoint), "training run": training_run,
                 "contamination": f"none (checked against {checked} training files)"}  # fmt: skip
        report = write_report(Path(tmp) / "report", f"Evaluation of {label}", results, champion, classes, facts)
        mlflow.log_artifact(str(Path(tmp) / "results.json"))
        mlflow.log_artifacts(str(report.parent), artifact_path="report")
        if model.name and model.version:
            client.set_model_version_tag(model.name, model.version, "omnistage.eval_run", run.info.run_id)
        return Evaluation(model, results, run.info.run_id, f"{run.info.artifact_uri}/report/report.md")
