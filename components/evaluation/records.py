"""Evaluation runs as MLflow records: the newest evaluation of a model version, suite by suite, and its
per-item scores (the `results.json` artifact) for the gate's paired bootstrap.

Kept free of torch: the registry, the gate and `omnistage status` read evaluations without loading a model.
Everything is found from the registry alone: the evaluation runs carry the model name and version as tags.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from components.specs.evals import MODALITIES
from components.tracking.experiments import EVALUATION_EXPERIMENT

BLANKED_FIELDS = ("value", "ci_low", "ci_high", "delta", "delta_ci_low", "delta_ci_high")


def latest_evaluation_run(client, name: str, version: str):
    """The newest evaluation run of a model version, or None."""
    experiment = client.get_experiment_by_name(EVALUATION_EXPERIMENT)
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1,
                              filter_string=f"tags.`omnistage.model_name` = '{name}' and "
                                            f"tags.`omnistage.model_version` = '{version}'")  # fmt: skip
    return runs[0] if runs else None


def suite_records(metrics: dict[str, float]) -> dict[str, dict]:
    """Suite -> {value, ci_low, ci_high, chance, blanked, controls, num_items, min_items, higher_is_better} from
    an evaluation run's metrics (components.evaluation.results.suite_metrics); fields an older evaluation
    did not log are None (controls: {} for a suite without modality_controls)."""
    out = {}
    for suite in sorted(k for k in metrics if "." not in k):
        get = metrics.get
        blanked = None
        if f"{suite}.blanked.value" in metrics:
            blanked = {f: metrics[f"{suite}.blanked.{f}"] for f in BLANKED_FIELDS}
        controls = {m: {f: metrics[f"{suite}.{m}_blanked.{f}"] for f in BLANKED_FIELDS}
                    for m in MODALITIES if f"{suite}.{m}_blanked.value" in metrics}  # fmt: skip
        higher = get(f"{suite}.higher_is_better")
        num, least = get(f"{suite}.num_items"), get(f"{suite}.min_items")
        out[suite] = {"value": metrics[suite], "ci_low": get(f"{suite}.ci_low", metrics[suite]),
                      "ci_high": get(f"{suite}.ci_high", metrics[suite]), "chance": get(f"{suite}.chance"),
                      "blanked": blanked, "controls": controls, "num_items": None if num is None else int(num),
                      "min_items": None if least is None else int(least),
                      "higher_is_better": None if higher is None else bool(higher)}  # fmt: skip
    return out


def latest_evaluation(client, name: str, version: str) -> dict[str, dict]:
    """Suite -> its record (suite_records) from the newest evaluation run of a model version ({} if none)."""
    run = latest_evaluation_run(client, name, version)
    return suite_records(run.data.metrics) if run is not None else {}


def evaluation_items(client, run_id: str) -> dict[str, list[dict]]:
    """Suite -> per-item records of an evaluation run's results.json ({} for a run that has none)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "results.json", tmp)
        except Exception:  # an evaluation logged before results.json existed, or a deleted artifact
            return {}
        results = json.loads(Path(path).read_text())
    return {r["suite"]: r.get("items", []) for r in results if r.get("items") and "id" in r["items"][0]}


def latest_evaluation_with_items(client, name: str, version: str) -> dict[str, dict]:
    """latest_evaluation with each suite's per-item records under `items` (absent when not recorded)."""
    run = latest_evaluation_run(client, name, version)
    if run is None:
        return {}
    records = suite_records(run.data.metrics)
    for suite, items in evaluation_items(client, run.info.run_id).items():
        if suite in records:
            records[suite]["items"] = items
    return records
