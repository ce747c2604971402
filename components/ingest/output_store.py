"""Where an ingestion writes: a local folder, or an object-storage URI (`s3://`, `gs://`) via fsspec.

Everything the pipeline writes (shards, manifest, reports, card, `.work/` plan and result records) goes
through an `OutputStore`, by its path relative to the output root (the layout names are below).

- **Local folder**: files are written where they end up, made visible by `os.replace` (atomic on POSIX),
  exactly as before; `staging` is the output folder itself, so nothing is copied.
- **URI**: there is no rename in object storage, so whatever is built on disk (a shard tar, the card,
  GX Data Docs) is built in a local staging folder and uploaded when complete: one object per file,
  written by a single PUT (or a multipart upload, which S3 also shows only once completed), so a reader
  never sees a partial object. Small files (JSON, parquet) are uploaded from memory. The staging folder
  is one per output URI under `$OMNISTAGE_STAGING_DIR` (default: the system temp folder) and is emptied
  when a store opens, so what a killed run left there is never read.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO

import fsspec

from components.object_storage import is_remote, join

SHARDS = "shards"
WORK = ".work"
PROBE_TABLE = f"{WORK}/probe.parquet"
PLAN = f"{WORK}/plan.json"
MANIFEST = "manifest.parquet"
QUARANTINE = "quarantine.jsonl"
DUPLICATES = "duplicates.jsonl"
STATS = "stats.json"
VALIDATION = "validation"
CARD = "card"

STAGING_ENV = "OMNISTAGE_STAGING_DIR"


class OutputStore:
    """An ingestion's output root; `rel` arguments are '/'-separated paths below it."""

    def __init__(self, out: str | Path):
        self.location = str(out)
        self.remote = is_remote(out)
        if self.remote:
            self._fs, self._root = fsspec.core.url_to_fs(self.location)
            self._root = self._root.rstrip("/")
            digest = hashlib.sha256(self.location.encode()).hexdigest()[:16]
            self.staging = Path(os.environ.get(STAGING_ENV) or tempfile.gettempdir()) / f"omnistage-out-{digest}"
            shutil.rmtree(self.staging, ignore_errors=True)
        else:
            self._fs, self._root = None, ""
            self.staging = Path(out)
        self.staging.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"OutputStore({self.location!r})"

    def url(self, rel: str) -> str:
        """What a user or another tool opens: the local path or the object's URI."""
        return join(self.location, *rel.split("/"))

    def staged(self, rel: str) -> Path:
        """The local path where a file for `rel` is built before `publish` (the final path when local)."""
        path = self.staging / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def staged_dir(self, rel: str) -> Path:
        """A local folder for `rel`, created (inside the output folder when local)."""
        path = self.staging / rel
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _key(self, rel: str) -> str:
        return f"{self._root}/{rel}"

    def exists(self, rel: str) -> bool:
        if not self.remote:
            return (self.staging / rel).is_file()
        return self._fs.isfile(self._key(rel))

    def read_bytes(self, rel: str) -> bytes:
        if not self.remote:
            return (self.staging / rel).read_bytes()
        return self._fs.cat_file(self._key(rel))

    def open(self, rel: str) -> IO[bytes]:
        """A seekable binary reader of `rel` (a shard, for the card's contact sheet)."""
        return open(self.staging / rel, "rb") if not self.remote else self._fs.open(self._key(rel), "rb")

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write `rel` whole: a temporary file renamed into place, or one PUT."""
        if not self.remote:
            path = self.staged(rel)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            return
        self._fs.pipe_file(self._key(rel), data)

    def publish(self, built: Path, rel: str) -> None:
        """Make the finished local file `built` visible as `rel`: a rename, or an upload then delete."""
        if not self.remote:
            os.replace(built, self.staged(rel))
            return
        self._fs.put_file(str(built), self._key(rel))
        built.unlink()

    def publish_tree(self, rel: str) -> None:
        """Upload the staged folder `rel` (GX Data Docs, the card) file by file; no-op when local."""
        if not self.remote or not (self.staging / rel).is_dir():
            return
        for path in sorted(p for p in (self.staging / rel).rglob("*") if p.is_file()):
            self._fs.put_file(str(path), self._key(path.relative_to(self.staging).as_posix()))

    def list(self, rel_dir: str, suffix: str) -> list[str]:
        """Names of the files directly in `rel_dir` that end with `suffix`, sorted."""
        if not self.remote:
            folder = self.staging / rel_dir
            return sorted(p.name for p in folder.glob(f"*{suffix}")) if folder.is_dir() else []
        try:
            keys = self._fs.ls(self._key(rel_dir), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(k.rsplit("/", 1)[-1] for k in keys if k.endswith(suffix))

    def remove(self, rel: str) -> None:
        if not self.remote:
            (self.staging / rel).unlink(missing_ok=True)
        elif self._fs.isfile(self._key(rel)):
            self._fs.rm_file(self._key(rel))

    def close(self) -> None:
        """Drop the staging folder of a URI (never a local output folder)."""
        if self.remote:
            shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> OutputStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
