"""Evaluation runs as MLflow records: the newest evaluation of a model version, suite by suite.

Kept free of torch: the registry, the gate and `omnistage status` read evaluations without loading a model.
"""

from __future__ import annotations

from components.tracking.experiments import EVALUATION_EXPERIMENT


def latest_evaluation(client, name: str, version: str) -> dict[str, dict]:
    """Suite -> {value, ci_low, ci_high} from the newest evaluation run of a model version ({} if none)."""
    experiment = client.get_experiment_by_name(EVALUATION_EXPERIMENT)
    if experiment is None:
        return {}
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1,
                              filter_string=f"tags.`omnistage.model_name` = '{name}' and "
                                            f"tags.`omnistage.model_version` = '{version}'")  # fmt: skip
    if not runs:
        return {}
    metrics = runs[0].data.metrics
    suites = {k for k in metrics if "." not in k}
    return {s: {"value": metrics[s], "ci_low": metrics.get(f"{s}.ci_low", metrics[s]),
                "ci_high": metrics.get(f"{s}.ci_high", metrics[s])} for s in suites}  # fmt: skip
