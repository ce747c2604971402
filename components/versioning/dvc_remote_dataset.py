"""Version a dataset whose ingestion wrote to object storage (`omnistage ingest --out s3://...` or gs://).

The local flow (dvc_dataset.py) records the shard folder as an output of the stage `ingest-<name>`; DVC 3
tracks only paths inside the repository (external outputs are gone), so it cannot record a bucket prefix.
`dvc import-url --to-remote URI PATH` can: it streams each object from the bucket into the DVC remote,
content-addressed by md5, without a copy on this machine, and writes PATH.dvc holding the md5 of the
folder. That md5 is computed exactly as for a local folder, so a dataset version id names the same bytes
whether the shards were written locally or to a bucket (tests/components/versioning checks this).

    version = commit_remote_dataset(repo, spec, "s3://bucket/datasets/demo", remote_url="s3://bucket/dvc")
    omnistage dataset commit --spec ... --out s3://bucket/datasets/demo --remote s3://bucket/dvc

The .dvc files go to `datasets/<scheme>/<bucket>/<prefix>/` in the repository (commit them to git to keep
the history; in a pod without git they are lost, but the data and its `.dir` listing stay in the remote under
the version's md5, which is stamped into `<out>/stats.json` and returned). The cost is one copy of the
shards in the remote, which keeps a version readable after the next ingestion overwrites the prefix. The
S3 endpoint and credentials come from the environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), which
both DVC's S3 remote and its import read.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from components.specs.dataset import DatasetSpec
from components.versioning.dvc_dataset import DatasetVersion, DvcError, _git_state, ensure_dvc_repo, run_dvc

OUTPUTS = ("shards", "manifest.parquet", "quarantine.jsonl")  # what the local stage records as outs


def import_folder(out: str) -> str:
    """Where in the repository the .dvc files of `out` go: one folder per bucket prefix."""
    scheme, _, rest = out.partition("://")
    return f"datasets/{scheme}/{rest.strip('/')}"


def _dvc_md5(repo: Path, dvc_file: str) -> str:
    (out,) = yaml.safe_load((repo / dvc_file).read_text())["outs"]
    return out["md5"]


def _stats_file(out: str):
    import fsspec

    fs, root = fsspec.core.url_to_fs(out)
    path = f"{root.rstrip('/')}/stats.json"
    if not fs.exists(path):
        raise DvcError(f"{out}/stats.json does not exist: ingest into --out {out} first (omnistage ingest)")
    return fs, path


def _stamp_stats(fs, path: str, version: DatasetVersion) -> None:
    stats = json.loads(fs.cat_file(path))
    stats["version"] = {k: v for k, v in version.as_dict().items() if k != "reproduced"}
    fs.pipe_file(path, json.dumps(stats, indent=2, sort_keys=True).encode())  # one PUT: readers see old or new


def commit_remote_dataset(repo: Path, spec: DatasetSpec, out: str, remote_url: str | None = None) -> DatasetVersion:
    """Import the ingestion's outputs in `out` into the DVC remote and return (and stamp) the version."""
    repo = Path(repo).resolve()
    fs, stats_path = _stats_file(out)  # before copying anything: an unfinished ingestion is no version
    ensure_dvc_repo(repo, remote_url)
    remotes = run_dvc(repo, "remote", "list").split()
    if not remotes:
        raise DvcError(f"{repo}: no DVC remote; a dataset in {out} is versioned by copying it into one: pass "
                       "--remote s3://bucket/dvc (or `dvc remote add -d NAME URL` in the repository)")  # fmt: skip
    folder = import_folder(out)
    (repo / folder).mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        run_dvc(repo, "import-url", "--to-remote", "--force", f"{out.rstrip('/')}/{name}", f"{folder}/{name}")
    commit, dirty = _git_state(repo)
    version = DatasetVersion(
        dataset=spec.name,
        version=_dvc_md5(repo, f"{folder}/shards.dvc"),
        manifest_md5=_dvc_md5(repo, f"{folder}/manifest.parquet.dvc"),
        git_commit=commit,
        git_dirty=dirty,
        stage=f"{folder}/shards.dvc",
        reproduced=True,
        remote=remotes[1] if len(remotes) > 1 else remotes[0],
    )
    _stamp_stats(fs, stats_path, version)
    return version
