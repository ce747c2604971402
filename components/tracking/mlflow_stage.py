"""Track a curriculum stage in MLflow: a child run per stage under one parent run per curriculum run.

Logged: the resolved stage config as params; tags (git commit, config hash, curriculum, stage, the
checkpoint it started from and the one it wrote); dataset inputs (`mlflow.data` with the DVC version as
digest and the ingested folder as source, so lineage can reach the manifest; the DVC remote the version
lives on as tag `omnistage.dvc_remote.NAME`, which `omnistage dataset pull` defaults to); metrics per step
(asynchronous); the checkpoint (tag `omnistage.checkpoint_storage` says which way), never through the MLflow
server when large (a full-size checkpoint is ~1.1 TB):
- `object_store`: published by the stage (`StageRun.checkpoint_uri`): only its URI is recorded (tags
  `omnistage.checkpoint` and `omnistage.checkpoint_uri`, the registry version's source);
- `reference`: a folder on the shared checkpoint volume (under `OMNISTAGE_CHECKPOINT_ROOT`) or over
  `LARGE_LOCAL_CHECKPOINT_BYTES` (2 GiB): the run's checkpoint artifact is one pointer file,
  `checkpoints/step-N/checkpoint.uri`, naming the folder, which registration and `resolve_model` follow;
- `copy`: a small local folder (the laptop: `make run`) is copied as run artifacts, so `models:/` works
  after the folder is gone.

When the tracking server cannot be reached, training goes on: every call is appended to
`OUT/tracking_fallback.jsonl` with a warning, and `replay_fallback` sends it later. Nothing is lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from components.object_storage import is_remote
from components.tracking.experiments import CURRICULUM_EXPERIMENT, use_experiment
from components.training.checkpoint_layout import checkpoint_dir
from components.training.data_parallel import launch_world

if TYPE_CHECKING:
    import pandas as pd

    from components.training.stage_runner import StageResult, StageRun

log = logging.getLogger(__name__)
FALLBACK_NAME = "tracking_fallback.jsonl"
# A local checkpoint above this size is referenced, not copied into MLflow; tiny-preset checkpoints are ~5 MB.
LARGE_LOCAL_CHECKPOINT_BYTES = 2 << 30
CHECKPOINT_STORAGE_TAG = "omnistage.checkpoint_storage"  # object_store | reference | copy
CHECKPOINT_POINTER = "checkpoint.uri"  # the same file name as a KFP stage artifact's pointer (stage_entry.POINTER)


def _git_commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def _flatten(prefix: str, value, out: dict) -> dict:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, (list, tuple)) else value
    return out


DVC_REMOTE_TAG = "omnistage.dvc_remote."  # + dataset name: the DVC remote its logged version was pushed to


def dataset_remote(folder: Path) -> str | None:
    """The DVC remote an ingested dataset's version was pushed to (or restored from), as stats.json says."""
    stats = json.loads((Path(folder) / "stats.json").read_text())
    return (stats.get("version") or {}).get("remote")


def recorded_remote(name: str, version: str, tracking_uri: str) -> str | None:
    """The DVC remote MLflow recorded with version `version` of dataset `name` (newest stage run that trained
    on it); None when no run did or the tracking store cannot be read."""
    from components.tracking.experiments import mlflow_client

    version = version if version.endswith(".dir") else f"{version}.dir"
    client = mlflow_client(tracking_uri)
    try:
        experiment = client.get_experiment_by_name(CURRICULUM_EXPERIMENT)
        runs = client.search_runs([experiment.experiment_id], filter_string=f"datasets.digest = '{version}'",
                                  order_by=["attributes.start_time DESC"]) if experiment else []  # fmt: skip
    except Exception as exc:  # the remote is a default: an unreachable store leaves the caller's fallback
        log.warning("MLflow at %s unreadable (%s): no recorded DVC remote for %s@%s", tracking_uri, exc, name, version)
        return None
    return next((r.data.tags[DVC_REMOTE_TAG + name] for r in runs if DVC_REMOTE_TAG + name in r.data.tags), None)


def dataset_input(folder: Path) -> tuple[pd.DataFrame, str, str]:
    """(manifest, digest, name) of an ingested dataset: the digest is its DVC version when versioned."""
    import pandas as pd

    stats = json.loads((folder / "stats.json").read_text())
    manifest = pd.read_parquet(folder / "manifest.parquet", columns=["path", "sha256", "split", "task_family"])
    version = (stats.get("version") or {}).get("version")
    digest = version or hashlib.md5((folder / "manifest.parquet").read_bytes()).hexdigest()
    return manifest, digest, stats.get("dataset", folder.name)


class _Sink:
    """MLflow when reachable, else a JSONL file of the same calls."""

    def __init__(self, tracking_uri: str, fallback: Path):
        import mlflow

        self.mlflow, self.fallback, self.online = mlflow, fallback, True
        try:
            use_experiment(mlflow, CURRICULUM_EXPERIMENT, tracking_uri)
        except Exception as exc:  # any transport or server error: train on, track locally
            self.online = False
            log.warning("MLflow at %s unreachable (%s): tracking to %s", tracking_uri, exc, fallback)

    def record(self, call: str, **kwargs) -> None:
        self.fallback.parent.mkdir(parents=True, exist_ok=True)
        with open(self.fallback, "a") as fh:
            fh.write(json.dumps({"call": call, **kwargs}, default=str) + "\n")


def tracked_stage(run: StageRun, tracking_uri: str, parent_run_id: str | None = None) -> tuple[StageResult, str]:
    """Run the stage with MLflow tracking, as a child of the curriculum's `parent_run_id`, whose end moves to
    this stage's (FAILED if it fails here); returns the result and the stage's run id (or 'offline').

    Under torchrun only rank 0 tracks (the stage runner all-reduces the metrics it passes to `on_step`);
    the other ranks train without opening MLflow and return run id 'rank-N'.
    """
    # Imported here, not at module level: the stage runner brings torch and megatron-core (~5 CPU-s), which
    # the pipeline's start-curriculum-run step (start_parent_run) does not need.
    from components.training.stage_runner import run_stage

    rank = launch_world()[1]
    if rank != 0:
        run.on_step = None
        return run_stage(run), f"rank-{rank}"
    run.curriculum.stage(run.stage)  # a stage name the curriculum lacks is refused before MLflow is touched
    sink = _Sink(tracking_uri, Path(run.out) / FALLBACK_NAME)
    try:
        result, run_id = _tracked(sink, run, parent_run_id)
    except BaseException:  # a stage that fails (or cannot start) fails its curriculum
        _extend_parent(sink, tracking_uri, parent_run_id, "FAILED")
        raise
    _extend_parent(sink, tracking_uri, parent_run_id, "FINISHED")
    return result, run_id


def _tracked(sink: _Sink, run: StageRun, parent_run_id: str | None) -> tuple[StageResult, str]:
    from components.training.stage_runner import run_stage

    stage = run.curriculum.stage(run.stage)
    config = stage.model_dump(mode="json")
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    tags = {"omnistage.curriculum": run.curriculum.name, "omnistage.stage": stage.name,
            "omnistage.git_commit": _git_commit(), "omnistage.config_hash": config_hash,
            "omnistage.init_from": _checkpoint_ref(run.init_from) if run.init_from else "none",
            "omnistage.preset": run.curriculum.preset}  # fmt: skip
    params = _flatten("", config, {})
    if not sink.online:
        sink.record("start", run_name=stage.name, tags=tags, params=params, parent_run_id=parent_run_id)
        run.on_step = lambda step, metrics: sink.record("metrics", step=step, metrics=_finite(metrics))
        result = run_stage(run)
        sink.record("end", checkpoint=result.checkpoint_uri or str(result.checkpoint.resolve()), steps=result.steps)
        return result, "offline"
    mlflow = sink.mlflow
    parent = {"parent_run_id": parent_run_id} if parent_run_id else {}
    with mlflow.start_run(run_name=stage.name, nested=bool(parent_run_id), tags=tags, **parent) as active:
        mlflow.log_params(params)
        for name, folder in run.datasets.items():
            if name in stage.data.datasets:
                manifest, digest, ds_name = dataset_input(Path(folder))
                source = str(Path(folder).resolve())
                mlflow.log_input(mlflow.data.from_pandas(manifest, source=source, name=ds_name, digest=digest),
                                 context="train")  # fmt: skip
                if remote := dataset_remote(Path(folder)):  # `omnistage dataset pull NAME VERSION` reads it
                    mlflow.set_tag(DVC_REMOTE_TAG + ds_name, remote)
        run.on_step = lambda step, metrics: mlflow.log_metrics(_finite(metrics), step=step, synchronous=False)
        result = run_stage(run)
        mlflow.flush_async_logging()
        mlflow.set_tags(_checkpoint_tags(mlflow, result))
        mlflow.log_metrics({"final_loss": result.final_loss, "packing_efficiency": result.packing_efficiency,
                            "skipped_too_long": result.skipped_too_long, **result.probes})  # fmt: skip
        return result, active.info.run_id


def _extend_parent(sink: _Sink, tracking_uri: str, parent_run_id: str | None, status: str) -> None:
    """The curriculum's parent run (start_parent_run ends it at once: its stages run in other processes) ends
    where its latest tracked stage ends, with that stage's outcome: the MLflow UI shows the curriculum's
    duration and a stage that failed under tracking. Failures outside it (a TrainJob refused at launch, a pod
    killed) leave the parent as it was. A parent still running (a caller holds it open) is left to its caller."""
    if not parent_run_id or not sink.online:
        return
    try:
        client = sink.mlflow.MlflowClient(tracking_uri)
        if client.get_run(parent_run_id).info.status != "RUNNING":
            client.set_terminated(parent_run_id, status)
    except Exception as exc:  # the stage's own outcome stands; only the parent's end is not moved
        log.warning("could not mark curriculum run %s %s: %s", parent_run_id, status, exc)


def _checkpoint_ref(location) -> str:
    """How a checkpoint is named in tags (and found again by lineage): its URI, or its resolved local folder."""
    return str(location).rstrip("/") if is_remote(location) else str(checkpoint_dir(Path(location)).resolve())


def _checkpoint_tags(mlflow, result: StageResult) -> dict[str, str]:
    """Record the stage's checkpoint (see the module doc): its object-store URI; a reference to a folder on the
    shared volume or over the copy limit; else (a small local checkpoint, the laptop) a copy as run artifacts."""
    steps = str(result.steps)
    if result.checkpoint_uri:
        uri = result.checkpoint_uri.rstrip("/")
        return {"omnistage.checkpoint": uri, "omnistage.checkpoint_uri": uri, "omnistage.steps": steps,
                CHECKPOINT_STORAGE_TAG: "object_store"}  # fmt: skip
    folder = Path(result.checkpoint).resolve()
    artifact_path = f"checkpoints/step-{result.steps}"
    tags = {"omnistage.checkpoint": str(folder), "omnistage.steps": steps}
    reason = _why_not_copied(folder)
    if reason is None:
        mlflow.log_artifacts(str(folder), artifact_path=artifact_path)
        return {**tags, CHECKPOINT_STORAGE_TAG: "copy"}
    # The run's checkpoint artifact is a pointer file naming the folder: the registry version's source is that
    # artifact (a tracking server refuses a bare local path as a source) and resolve_model follows it.
    log.info("checkpoint %s is %s: MLflow records a reference, not a copy", folder, reason)
    mlflow.log_text(str(folder), f"{artifact_path}/{CHECKPOINT_POINTER}")
    return {**tags, CHECKPOINT_STORAGE_TAG: "reference"}


def _why_not_copied(folder: Path) -> str | None:
    """Why a local checkpoint is referenced rather than copied into MLflow's artifact store; None: copy it."""
    volume = os.environ.get("OMNISTAGE_CHECKPOINT_ROOT")
    if volume and folder.is_relative_to(Path(volume).resolve()):
        return f"on the shared checkpoint volume (OMNISTAGE_CHECKPOINT_ROOT={volume})"
    size = 0
    for path in folder.rglob("*"):
        size += path.stat().st_size if path.is_file() else 0
        if size > LARGE_LOCAL_CHECKPOINT_BYTES:
            return (f"over {LARGE_LOCAL_CHECKPOINT_BYTES / 2**30:g} GiB (keep the folder: the run points at it; "
                    "on a cluster publish to object storage, OMNISTAGE_CHECKPOINT_URI)")  # fmt: skip
    return None


def _finite(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v == v}


def start_parent_run(curriculum: str, tracking_uri: str, datasets: str = "{}", training_key: str = "") -> str:
    """Create the curriculum's parent run (ended at once; stages attach as children and move its end to theirs).
    'offline' on failure.

    Tagged with the data versions it trains on and the retraining key (components.orchestration.retrain).
    """
    from components.versioning.dataset_cache import parse_dataset_ref

    sink = _Sink(tracking_uri, Path("/tmp") / "omnistage-parent-fallback.jsonl")
    if not sink.online:
        return "offline"
    versions = {}
    for name, folder in json.loads(datasets or "{}").items():
        stats = Path(folder) / "stats.json"
        ref = parse_dataset_ref(folder)
        if ref:  # NAME@VERSION: the version is the argument itself
            versions[name] = ref[1] if ref[1].endswith(".dir") else f"{ref[1]}.dir"
        elif stats.is_file():
            versions[name] = (json.loads(stats.read_text()).get("version") or {}).get("version")
    tags = {"omnistage.curriculum_file": str(curriculum), "omnistage.git_commit": _git_commit(),
            "omnistage.data_versions": json.dumps(versions), "omnistage.training_key": training_key}  # fmt: skip
    with sink.mlflow.start_run(run_name=f"curriculum {Path(curriculum).stem}", tags=tags) as run:
        return run.info.run_id


def replay_fallback(fallback: Path, tracking_uri: str) -> str:
    """Send a stage tracked offline to MLflow; returns the new run id."""
    import mlflow

    use_experiment(mlflow, CURRICULUM_EXPERIMENT, tracking_uri)
    events = [json.loads(line) for line in Path(fallback).read_text().splitlines()]
    start = next(e for e in events if e["call"] == "start")
    parent = {"parent_run_id": start["parent_run_id"]} if start.get("parent_run_id") else {}
    with mlflow.start_run(run_name=start["run_name"], tags=start["tags"], nested=bool(parent), **parent) as active:
        mlflow.log_params(start["params"])
        for event in events:
            if event["call"] == "metrics":
                mlflow.log_metrics(event["metrics"], step=event["step"])
            elif event["call"] == "end":
                uri = {"omnistage.checkpoint_uri": event["checkpoint"]} if is_remote(event["checkpoint"]) else {}
                mlflow.set_tags({"omnistage.checkpoint": event["checkpoint"], "omnistage.steps": str(event["steps"]),
                                 **uri})  # fmt: skip
    os.replace(fallback, Path(fallback).with_suffix(".replayed"))
    return active.info.run_id
