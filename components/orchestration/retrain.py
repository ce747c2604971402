"""Retraining, idempotently: run the curriculum pipeline (ending in evaluate -> gate -> promote) for a data
version unless that exact data version and curriculum already trained to completion.

    outcome = retrain(RetrainRequest(curriculum, gate, {"demo": folder}, tokenizer, tracking_uri, root))

The key of a training is a hash of the curriculum file, the gate file and each dataset's DVC version; the
parent MLflow run of a finished curriculum run carries it (`omnistage.training_key`) with
`omnistage.completed=true`. `omnistage run` (what `make run` calls) and the `retrain_omni` DAG both come
through here.

The data versions: read from each dataset folder's stats.json, or pinned by the caller (`versions`, e.g.
the version the triggering Airflow Asset event carries); a pinned version wins and must agree with a folder
that can be read here (a stale folder is refused, not trained under the wrong key).

Where the pipeline runs: `kfp.local` on this machine (the default), or a Kubeflow Pipelines cluster when
`kfp_host` is set: submitted once per training key (`kfp_runs.submit_or_find`) with each dataset as
`NAME@VERSION` (never a path on the submitting machine), polled until it ends, and cancelled when it runs
past `timeout_s`. The `retrain_omni` DAG splits that cluster path into tasks
(`omnistage pipeline submit` -> a reschedule-mode sensor on `pipeline status` -> `pipeline finish`) so the
wait holds no worker slot; it is exercised against a stand-in KFP API (tests/components/orchestration/
kfp_standin.py), not a KFP backend.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from components.evaluation.items import dataset_version

log = logging.getLogger(__name__)


@dataclass
class RetrainRequest:
    curriculum: Path
    gate: Path
    datasets: dict[str, Path | str]  # folders, or URIs (s3://...) for a cluster run
    tokenizer: Path | str  # a URI (s3://...) for a cluster run
    tracking_uri: str
    pipeline_root: Path
    force: bool = False
    max_steps: int = 0
    kfp_host: str | None = None
    timeout_s: int = 6 * 3600
    versions: dict[str, str] = field(default_factory=dict)  # pinned data versions (an Asset event's)
    kfp_namespace: str | None = None
    poll_s: float = 30.0


def resolve_versions(datasets: dict[str, Path | str], pinned: dict[str, str]) -> dict[str, str | None]:
    """Each dataset's version: the pinned one when given (checked against a readable folder), else the
    folder's own."""
    unknown = sorted(set(pinned) - set(datasets))
    if unknown:
        raise ValueError(f"--dataset-version names {unknown}, which no --dataset NAME=DIR gives: {sorted(datasets)}")
    versions: dict[str, str | None] = {}
    for name, folder in sorted(datasets.items()):
        on_disk = dataset_version(Path(folder)) if (Path(folder) / "stats.json").is_file() else None
        if name in pinned and on_disk is not None and on_disk != pinned[name]:
            raise ValueError(
                f"dataset {name}: {folder} holds version {on_disk}, but version {pinned[name]} was asked for "
                f"(the triggering Asset event's); restore it with `omnistage dataset pull {name} {pinned[name]} "
                f"--out {folder}` or drop --dataset-version to train what the folder holds"
            )
        if name not in pinned and not (Path(folder) / "stats.json").is_file():
            raise FileNotFoundError(f"dataset {name}: {folder} holds no stats.json; pin its version with "
                                    f"--dataset-version {name}=VERSION or ingest it first")  # fmt: skip
        versions[name] = pinned.get(name, on_disk)
    return versions


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


def plan(request: RetrainRequest) -> tuple[dict, str]:
    """The data versions and the training key they give with the curriculum, gate and step budget."""
    versions = resolve_versions(request.datasets, request.versions)
    return versions, training_key(request.curriculum, request.gate, versions, request.max_steps)


def already_trained(request: RetrainRequest, key: str, versions: dict) -> dict | None:
    """The outcome to report when MLflow has a completed curriculum run with this key (None with `force`)."""
    from components.promotion.registry import registry_status
    from components.specs.evals import GateSpec

    done = None if request.force else find_completed(key, request.tracking_uri)
    if not done:
        return None
    log.info("data versions %s already trained by curriculum run %s: skipping (force to retrain)", versions, done)
    model_name = GateSpec.load(request.gate).model_name
    return {"trained": False, "skipped_because": f"already trained by run {done}", "training_key": key,
            "data_versions": versions, "curriculum_run": done,
            **registry_status(model_name, request.tracking_uri)}  # fmt: skip


def submit_to_cluster(request: RetrainRequest) -> dict:
    """The KFP run for this request's training key (found or submitted), or the already-trained outcome
    (`run_id: None`) when no run carries the key and MLflow has it trained."""
    from components.orchestration.kfp_runs import KfpTarget, submit_or_find

    versions, key = plan(request)
    target = KfpTarget.from_options(request.kfp_host or "", request.kfp_namespace)
    run = submit_or_find(target, request.curriculum, request.gate, pipeline_arguments(request, key, versions), key,
                         trained_elsewhere=lambda: already_trained(request, key, versions))  # fmt: skip
    return {**run, "training_key": key, "data_versions": versions}


def pipeline_arguments(request: RetrainRequest, key: str, versions: dict[str, str | None]) -> dict:
    """The curriculum pipeline's parameters for a cluster run. Each dataset goes as `NAME@VERSION`, the version
    the training key was built from (pinned, the Asset event's, or the folder's): the stage pods restore it
    from the DVC remote (components.versioning.dataset_cache); a path on this machine (an Airflow worker)
    means nothing there, so an unversioned dataset is refused."""
    from components.versioning.dataset_cache import parse_dataset_ref

    refs = {}
    for name, version in sorted(versions.items()):
        ref = f"{name}@{version}"
        if version is None or parse_dataset_ref(ref) is None:
            raise ValueError(f"dataset {name}: a cluster run restores each dataset by its DVC version, and "
                             f"{request.datasets[name]} has {'none' if version is None else repr(version)} (a "
                             "32-hex md5, optionally .dir): commit it with `omnistage dataset commit` or pin "
                             f"--dataset-version {name}=VERSION")  # fmt: skip
        refs[name] = ref
    return {"datasets": json.dumps(refs), "tokenizer": str(request.tokenizer), "tracking_uri": request.tracking_uri,
            "max_steps": request.max_steps, "training_key": key}  # fmt: skip


def finish(key: str, versions: dict, gate: Path, tracking_uri: str) -> dict:
    """After the pipeline succeeded: mark its parent MLflow run completed; the outcome with registry status."""
    from components.promotion.registry import registry_status
    from components.specs.evals import GateSpec

    parent = _latest_run(key, tracking_uri, completed=False)
    if parent:
        from mlflow import MlflowClient

        MlflowClient(tracking_uri).set_tag(parent, "omnistage.completed", "true")
    return {"trained": True, "training_key": key, "data_versions": versions, "curriculum_run": parent,
            **registry_status(GateSpec.load(gate).model_name, tracking_uri)}  # fmt: skip


def retrain(request: RetrainRequest) -> dict:
    """Train (unless already done), evaluate, gate, promote; returns what happened and the registry status."""
    if request.kfp_host:
        return _run_on_cluster(request)
    versions, key = plan(request)
    if skipped := already_trained(request, key, versions):
        return skipped
    from components.pipelines.curriculum_pipeline import run_locally

    run_locally(request.curriculum, request.datasets, request.tokenizer, request.tracking_uri,
                request.pipeline_root, request.max_steps, request.gate, training_key=key)  # fmt: skip
    return finish(key, versions, request.gate, request.tracking_uri)


def _run_on_cluster(request: RetrainRequest) -> dict:
    """Submit (or find the run a previous attempt submitted), poll until it ends; past `timeout_s` cancel it.
    Raises when the run does not succeed."""
    from components.orchestration.kfp_runs import KfpTarget, cancel_run, run_state

    run = submit_to_cluster(request)
    if run["run_id"] is None:
        return run  # trained before, by a run MLflow knows
    target = KfpTarget.from_options(request.kfp_host or "", request.kfp_namespace)
    deadline = time.monotonic() + request.timeout_s
    while not (status := run_state(target, run["run_id"]))["final"]:
        if time.monotonic() > deadline:
            cancel_run(target, run["run_id"])
            raise RuntimeError(f"KFP run {run['run_id']} ran past {request.timeout_s} s and was cancelled")
        time.sleep(request.poll_s)
    if status["state"] != "SUCCEEDED":
        raise RuntimeError(f"KFP run {run['run_id']} ended {status['state']}: {status['error'] or 'no error given'}; "
                           f"see the KFP UI at {request.kfp_host}")  # fmt: skip
    return finish(run["training_key"], run["data_versions"], request.gate, request.tracking_uri)
