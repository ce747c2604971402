"""A stage's inputs on the S3 stand-in as a cluster pod finds them (tests/s3_server.py): the dataset's
shards as a DVC version on an S3 remote, the tokenizer as an object, and the environment a stage step or
TrainJob node reads (remote, checkpoint URI, node-local caches under FOLDER)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml


def put_stage_inputs(dataset: Path, bucket: str, folder: Path) -> tuple[str, str, dict[str, str]]:
    """(dataset version, tokenizer URI, environment) for `dataset` (an ingested folder) in `bucket`."""
    from components.versioning.dvc_dataset import ensure_dvc_repo, run_dvc
    from tests.s3_server import s3_client

    repo = folder / "repo"
    shutil.copytree(dataset / "shards", repo / "shards")
    ensure_dvc_repo(repo, f"{bucket}/dvc")  # as `omnistage dataset commit` leaves it
    run_dvc(repo, "add", "-q", "shards")
    run_dvc(repo, "push", "-q")
    version = yaml.safe_load((repo / "shards.dvc").read_text())["outs"][0]["md5"]
    s3_client().upload_file(str(dataset / "tokenizer.json"), bucket.removeprefix("s3://"), "tok/tokenizer.json")
    env = {"OMNISTAGE_DVC_REMOTE": f"{bucket}/dvc", "OMNISTAGE_CHECKPOINT_URI": f"{bucket}/ckpt",
           "OMNISTAGE_DATASET_CACHE": str(folder / "datasets"), "OMNISTAGE_INPUT_CACHE": str(folder / "inputs"),
           "OMNISTAGE_CHECKPOINT_CACHE": str(folder / "ckpt-cache"),
           "OMNISTAGE_STAGING_DIR": str(folder / "staging")}  # fmt: skip
    return version, f"{bucket}/tok/tokenizer.json", env
