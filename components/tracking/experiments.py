"""MLflow experiments with their artifacts in a predictable place.

With a `sqlite:///DIR/mlflow.db` store MLflow would put artifacts in `./mlruns` of whatever directory a
process happens to run in (a KFP task, an Airflow worker); `use_experiment` puts them in DIR/mlartifacts,
next to the database, so every process of a local run shares one artifact store. A server store keeps
its own artifact root.
"""

from __future__ import annotations

from pathlib import Path

CURRICULUM_EXPERIMENT = "omnistage-curriculum"  # parent curriculum runs and their stage runs
EVALUATION_EXPERIMENT = "omnistage-evaluation"  # one run per evaluation of a model


class TrackingStoreMissing(ValueError):
    """A command that only reads state was pointed at a store that does not exist yet."""


def mlflow_client(tracking_uri: str, must_exist: bool = False):
    """An MlflowClient on `tracking_uri`, which also becomes this process's tracking URI.

    MLflow creates an empty SQLite database when the file is missing; a command that only reads state
    (`status`, `lineage`) passes `must_exist=True` so a wrong path or a fresh machine gets an error that
    says what to do, not an empty answer.
    """
    if must_exist and tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///") :])
        if not db.is_file():
            raise TrackingStoreMissing(
                f"no MLflow store at {db}: run `make run` first (it trains and promotes a model there), "
                "or point --tracking-uri / MLFLOW_TRACKING_URI at your store"
            )
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri)


def local_artifact_root(tracking_uri: str) -> str | None:
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///") :]).parent / "mlartifacts").resolve().as_uri()
    return None


def use_experiment(mlflow, name: str, tracking_uri: str) -> str:
    """Set the tracking URI and the active experiment (created on first use); returns its id."""
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        try:
            # The kind tag makes the UI open the runs table (training), not the GenAI traces overview.
            kind = {"mlflow.experimentKind": "custom_model_development"}
            experiment_id = mlflow.create_experiment(name, local_artifact_root(tracking_uri), tags=kind)
        except Exception:  # created meanwhile by a concurrent stage process
            experiment_id = mlflow.get_experiment_by_name(name).experiment_id
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id
