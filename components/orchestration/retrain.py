"""Retraining, idempotently: run the curriculum pipeline (ending in evaluate -> gate -> promote) for a data
version unless that exact data version and curriculum already trained to completion.

    outcome = retrain(RetrainRequest(curriculum, gate, {"demo": folder}, tokenizer, tracking_uri, root))

The key of a training is a hash of the curriculum file, the gate file and each dataset's DVC version; the
parent MLflow run of a finished curriculum run carries it (`omnistage.training_key`) with
`omnistage.completed=true`. `omnistage run` (what `make run` calls) and the `retrain_omni` DAG both come
through here.

Where the pipeline runs: `kfp.local` on this machine (the default), or a Kubeflow Pipelines cluster when
`kfp_host` is set (the compiled pipeline is submitted to its API and waited for, with a timeout). The
cluster path needs a KFP endpoint and is not exercised here.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from components.evaluation.items import dataset_version

log = logging.getLogger(__name__)


@dataclass
class RetrainRequest:
    curriculum: Path
    gate: Path
    datasets: dict[str, Path]
    tokenizer: Path
    tracking_uri: str
    pipeline_root: Path
    force: bool = False
    max_steps: int = 0
    kfp_host: str | None = None
    timeout_s: int = 6 * 3600


def data_versions(datasets: dict[str, Path]) -> dict[str, str | None]:
    return {name: dataset_version(Path(folder)) for name, folder in sorted(datasets.items())}


def training_key(curriculum: Path, gate: Path, versions: dict[str, str | None], max_steps: int = 0) -> str:
    digest = hashlib.sha256()
    for path in (curriculum, gate):
        digest.update(Path(path).read_bytes())
    digest.update(json.dumps({"data": versions, "max_steps": max_steps}, sort_keys=True).encode())
    return digest.hexdigest()[:20]


def _latest_run(key: str, tracking_uri: str, completed: bool) -> str | None:
    """The newest parent run of a curriculum run with this training key (only finished ones if `completed`)."""
    from components.tracking.experiments import CURRICULUM_EXPERIMENT, mlflow_client

    client = mlflow_client(tracking_uri)
    experiment = client.get_experiment_by_name(CURRICULUM_EXPERIMENT)
    if experiment is None:
        return None
    query = f"tags.`omnistage.training_key` = '{key}'"
    if completed:
        query += " and tags.`omnistage.completed` = 'true'"
    runs = client.search_runs([experiment.experiment_id], filter_string=query, max_results=1,
                              order_by=["attributes.start_time DESC"])  # fmt: skip
    return runs[0].info.run_id if runs else None


def find_completed(key: str, tracking_uri: str) -> str | None:
    """The parent run id of a finished curriculum run with this training key, if any."""
    return _latest_run(key, tracking_uri, completed=True)


def retrain(request: RetrainRequest) -> dict:
    """Train (unless already done), evaluate, gate, promote; returns what happened and the registry status."""
    from components.promotion.registry import registry_status
    from components.specs.evals import GateSpec

    versions = data_versions(request.datasets)
    key = training_key(request.curriculum, request.gate, versions, request.max_steps)
    model_name = GateSpec.load(request.gate).model_name
    done = None if request.force else find_completed(key, request.tracking_uri)
    if done:
        log.info("data versions %s already trained by curriculum run %s: skipping (force to retrain)", versions, done)
        return {"trained": False, "skipped_because": f"already trained by run {done}", "training_key": key,
                "data_versions": versions, "curriculum_run": done,
                **registry_status(model_name, request.tracking_uri)}  # fmt: skip
    folders = json.dumps({k: str(Path(v).resolve()) for k, v in request.datasets.items()})
    if request.kfp_host:
        _submit_to_cluster(request, folders, key)
    else:
        from components.pipelines.curriculum_pipeline import run_locally

        run_locally(request.curriculum, request.datasets, request.tokenizer, request.tracking_uri,
                    request.pipeline_root, request.max_steps, request.gate, training_key=key)  # fmt: skip
    parent = _latest_run(key, request.tracking_uri, completed=False)
    if parent:
        from mlflow import MlflowClient

        MlflowClient(request.tracking_uri).set_tag(parent, "omnistage.completed", "true")
    return {"trained": True, "training_key": key, "data_versions": versions, "curriculum_run": parent,
            **registry_status(model_name, request.tracking_uri)}  # fmt: skip


def _submit_to_cluster(request: RetrainRequest, folders: str, key: str) -> None:
    """Compile, submit to the KFP API at `kfp_host`, wait; raises when the run does not succeed in time."""
    import tempfile

    import kfp

    from components.pipelines.curriculum_pipeline import compile_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(request.curriculum, Path(tmp) / "pipeline.yaml", request.gate)
        client = kfp.Client(host=request.kfp_host)
        run = client.create_run_from_pipeline_package(
            str(package),
            arguments={
                "datasets": folders,
                "tokenizer": str(request.tokenizer),
                "tracking_uri": request.tracking_uri,
                "max_steps": request.max_steps,
                "training_key": key,
            },  # fmt: skip
            run_name=f"retrain-{key[:8]}",
        )
        result = client.wait_for_run_completion(run.run_id, timeout=request.timeout_s)
        state = getattr(result, "state", None) or getattr(getattr(result, "run", None), "status", None)
        if str(state).upper() not in ("SUCCEEDED", "SUCCESS"):
            raise RuntimeError(f"KFP run {run.run_id} ended {state}; see the KFP UI at {request.kfp_host}")
