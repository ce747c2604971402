"""Stage inputs addressed by version or URI, made local on the pod that trains: datasets and the tokenizer.

    materialise_dataset_ref("demo@3f2a...c1.dir")      # -> ~/.cache/omnistage/datasets/demo/3f2a...c1
    local_input_file("s3://bucket/tokenizers/tokenizer.json")

A stage pod on a cluster has no laptop path and no DVC cache: a dataset is named `NAME@VERSION` (VERSION is
the DVC md5 of the shard folder, what stats.json and MLflow record) and restored from the DVC remote with
the library behind `omnistage dataset pull` (components/versioning/dvc_restore.py), into a cache folder
(`$OMNISTAGE_DATASET_CACHE`, default `~/.cache/omnistage/datasets`). Idempotent: files whose md5 already
matches the version's listing are kept, so a second call downloads nothing but that listing.

The version covers the shard folder only (the manifest is a separate DVC output with its own md5), so the
folder is completed from the shards themselves: `stats.json` (dataset, shard count, the version, the
remote) and a `manifest.parquet` rebuilt from each sample's JSON (key, sha256, source, relpath, modality,
task family, split; `path` and the perceptual `fingerprint` are not in the shards and stay empty, so the
near-copy contamination check has nothing to compare for such a dataset: exact-hash checks still work).
The remote is `remote_url`, else `$OMNISTAGE_DVC_REMOTE`, else the first DVC remote of this repository.

Several processes may ask for the same input at once (ranks started by a launcher other than
`omnistage train`, two jobs on one node sharing the cache): each materialisation holds an exclusive lock
file beside its cache folder (`fcntl.flock`, node-local), so one downloads and the others then find the
finished copy. `omnistage train --nproc-per-node N` resolves its inputs once per node, before torchrun
starts the ranks, so its ranks never contend.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from components.object_storage import is_remote

DATASET_CACHE_ENV = "OMNISTAGE_DATASET_CACHE"
REMOTE_ENV = "OMNISTAGE_DVC_REMOTE"
INPUT_CACHE_ENV = "OMNISTAGE_INPUT_CACHE"
_REF = re.compile(r"^(?P<name>[A-Za-z0-9_-]+)@(?P<version>[0-9a-f]{32}(\.dir)?)$")
_MANIFEST_FIELDS = ("key", "sha256", "source", "relpath", "modality", "task_family", "split")


def parse_dataset_ref(text: str) -> tuple[str, str] | None:
    """(NAME, VERSION) for `NAME@VERSION`; None for anything else (a folder path or URI)."""
    match = _REF.match(text.strip())
    return (match["name"], match["version"]) if match else None


def _cache_root(env: str, default: str) -> Path:
    return Path(os.environ.get(env) or Path.home() / ".cache" / "omnistage" / default)


def _remote(remote_url: str | None) -> str:
    if remote_url or os.environ.get(REMOTE_ENV):
        return remote_url or os.environ[REMOTE_ENV]
    from components.versioning.dvc_dataset import DvcError, default_remote_url

    try:
        return default_remote_url(Path(__file__).resolve().parents[2])  # the image holds the repo
    except DvcError as exc:
        raise ValueError(f"a dataset given as NAME@VERSION needs its DVC remote: set {REMOTE_ENV} "
                         f"(e.g. s3://bucket/dvc) or give the repository a DVC remote ({exc})") from None  # fmt: skip


@contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Hold `FOLDER.lock` while `folder` is filled (see the module doc); released when the process dies too."""
    import fcntl

    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def manifest_rows_from_shards(shards: Path) -> list[dict]:
    """One row per sample, from the `KEY.json` member every sample carries (components/ingest/samples.py)."""
    rows = []
    for shard in sorted(Path(shards).glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".json") and member.name.count(".") == 1:
                    meta = json.loads(tar.extractfile(member).read())
                    rows.append({"path": None, "shard": shard.name, **{f: meta.get(f) for f in _MANIFEST_FIELDS}})
    return sorted(rows, key=lambda r: (r["shard"], r["key"]))


def _complete_folder(folder: Path, name: str, version: str, remote: str) -> None:
    """stats.json and manifest.parquet for a folder restored from its shard version (see the module doc)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    stats_path = folder / "stats.json"
    if stats_path.is_file() and (json.loads(stats_path.read_text()).get("version") or {}).get("version") == version:
        return
    rows = manifest_rows_from_shards(folder / "shards")
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    (folder / "manifest.parquet").write_bytes(buffer.getvalue())
    stats = {"dataset": name, "shards": len(list((folder / "shards").glob("*.tar"))), "accepted": len(rows),
             "manifest": "rebuilt from the shards' sample JSON (no path, no fingerprint)",
             "version": {"dataset": name, "version": version, "remote": remote}}  # fmt: skip
    tmp = stats_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(stats, indent=2, sort_keys=True))
    os.replace(tmp, stats_path)  # last: its version stamp says the folder is complete


def materialise_dataset(name: str, version: str, remote_url: str | None = None, cache: Path | None = None) -> Path:
    """The local dataset folder of version `version` of `name`, restored from the DVC remote when needed."""
    from components.versioning.dvc_restore import restore_version

    version = version if version.endswith(".dir") else version + ".dir"
    remote = _remote(remote_url)
    folder = Path(cache or _cache_root(DATASET_CACHE_ENV, "datasets")) / name / version.removesuffix(".dir")
    with _exclusive(folder):
        restore_version(remote, version, folder / "shards")
        _complete_folder(folder, name, version, remote)
    return folder


def local_dataset(location: str) -> Path:
    """A stage's dataset argument as a local folder: `NAME@VERSION` materialised, a path as given."""
    ref = parse_dataset_ref(location)
    if ref:
        return materialise_dataset(*ref)
    if is_remote(location):
        raise ValueError(f"dataset {location!r}: a dataset in object storage is given by its DVC version, "
                         "NAME@VERSION (e.g. demo@3f2a...c1.dir), not by URI")  # fmt: skip
    return Path(location)


def local_input_file(location: str) -> Path:
    """A single input file (the tokenizer) as a local path: a URI is downloaded once into
    `$OMNISTAGE_INPUT_CACHE` (default `~/.cache/omnistage/inputs`), again only when its size or ETag changed."""
    if not is_remote(location):
        return Path(location)
    import fsspec

    fs, path = fsspec.core.url_to_fs(location)
    info = fs.info(path)
    stamp = json.dumps({"size": info.get("size"), "etag": info.get("ETag") or info.get("etag")}, sort_keys=True)
    folder = _cache_root(INPUT_CACHE_ENV, "inputs") / hashlib.sha256(location.encode()).hexdigest()[:24]
    target = folder / path.rsplit("/", 1)[-1]
    stamp_file = folder / ".source.json"
    with _exclusive(folder):
        if target.is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp:
            return target
        folder.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        fs.get_file(path, str(tmp))
        os.replace(tmp, target)
        stamp_file.write_text(stamp)
    return target
