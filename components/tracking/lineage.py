"""Lineage over MLflow: from a model or checkpoint back to raw files, and from a raw file forward.

- `lineage_back("models:/name/3" | "models:/name@champion" | CHECKPOINT_PATH)`: model version -> stage
  run that wrote the checkpoint -> the runs it was initialised from, stage by stage -> each run's
  dataset inputs (DVC version) -> their manifests -> input files with content hashes.
- `lineage_forward(PATH_OR_SHA256)`: every dataset version whose manifest holds the file -> every stage
  run that trained on it -> their checkpoints and registered model versions (what a data-removal
  request needs to find).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pandas as pd

from components.object_storage import is_remote
from components.tracking.experiments import CURRICULUM_EXPERIMENT, mlflow_client
from components.tracking.models import get_model_version
from components.training.checkpoint_layout import checkpoint_dir

SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _experiment_ids(client) -> list[str]:
    experiment = client.get_experiment_by_name(CURRICULUM_EXPERIMENT)
    return [experiment.experiment_id] if experiment else []


def _run_for(client, target: str):
    if target.startswith("models:/"):
        version = get_model_version(client, target)
        return client.get_run(version.run_id), {"name": version.name, "version": str(version.version)}
    if is_remote(target):  # a checkpoint published to object storage: its tag is the URI itself
        path = target.rstrip("/")
    else:
        try:
            path = str(checkpoint_dir(Path(target)).resolve())
        except FileNotFoundError:
            path = str(Path(target).resolve())  # a checkpoint since deleted: its tag still names it
    runs = client.search_runs(_experiment_ids(client), filter_string=f"tags.`omnistage.checkpoint` = '{path}'")
    if not runs:
        raise ValueError(f"no tracked stage wrote the checkpoint {path}")
    return runs[0], None


def _lineage_columns(manifest: Path) -> list[str]:
    """path, sha256, split, plus modality and fingerprint (near-copy contamination) where recorded."""
    import pyarrow.parquet as pq

    present = set(pq.read_schema(manifest).names)
    return ["path", "sha256", "split"] + [c for c in ("modality", "fingerprint") if c in present]


def _inputs(run) -> list[dict]:
    files = []
    for item in run.inputs.dataset_inputs:
        source = json.loads(item.dataset.source).get("uri", item.dataset.source)
        manifest = Path(source) / "manifest.parquet"
        rows = []
        if manifest.is_file():
            rows = pd.read_parquet(manifest, columns=_lineage_columns(manifest)).to_dict("records")
        files.append({"dataset": item.dataset.name, "version": item.dataset.digest, "source": source, "files": rows})
    return files


def lineage_back(target: str, tracking_uri: str) -> dict:
    client = mlflow_client(tracking_uri, must_exist=True)
    run, model_version = _run_for(client, target)
    stages = []
    while run is not None:
        stages.append({"stage": run.data.tags.get("omnistage.stage"), "run_id": run.info.run_id,
                       "checkpoint": run.data.tags.get("omnistage.checkpoint"),
                       "git_commit": run.data.tags.get("omnistage.git_commit"), "datasets": _inputs(run)})  # fmt: skip
        parent_ckpt = run.data.tags.get("omnistage.init_from", "none")
        run = _run_for(client, parent_ckpt)[0] if parent_ckpt != "none" else None
    return {"model_version": model_version, "stages": stages}


def lineage_forward(path_or_sha: str, tracking_uri: str) -> dict:
    if Path(path_or_sha).is_file():
        sha = hashlib.sha256(Path(path_or_sha).read_bytes()).hexdigest()
    elif SHA256_HEX.fullmatch(path_or_sha.lower()):
        sha = path_or_sha.lower()
    else:
        raise ValueError(
            f"{path_or_sha!r} is neither an existing file nor a sha256 (64 hex digits): give the "
            "raw file's path, or its content hash (column sha256 of a dataset's manifest.parquet)"
        )
    client = mlflow_client(tracking_uri, must_exist=True)
    runs = client.search_runs(_experiment_ids(client), max_results=10000)
    hits = []
    for run in runs:
        used = [d for d in _inputs(run) if any(row["sha256"] == sha for row in d["files"])]
        if not used:
            continue
        versions = client.search_model_versions(f"run_id = '{run.info.run_id}'")
        hits.append({"stage": run.data.tags.get("omnistage.stage"), "run_id": run.info.run_id,
                     "checkpoint": run.data.tags.get("omnistage.checkpoint"),
                     "dataset_versions": sorted({d["version"] for d in used}),
                     "model_versions": [{"name": v.name, "version": str(v.version)} for v in versions]})  # fmt: skip
    return {"sha256": sha, "trained_on_by": hits}
