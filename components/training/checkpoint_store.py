"""Stage checkpoints in object storage: publish a finished local checkpoint folder to a URI, fetch one back.

    publish_checkpoint(Path("run/stage0/checkpoint"), "s3://bucket/ckpt/tiny/run-1/stage0-text/checkpoint")
    local = local_checkpoint("s3://bucket/ckpt/tiny/run-1/stage0-text/checkpoint")   # a verified local copy

`dist_checkpointing` needs a filesystem, so a stage always writes its checkpoint locally
(components/training/checkpoint.py) and this module uploads the finished folder. **Publication:** a
checkpoint at URI is complete exactly when `URI/COMPLETE` exists. That object is a manifest (relative path
-> size and md5 of every file) and is written last, after every file object: S3 and GCS show an object only
once its upload has finished, so a reader that finds the marker finds every file it lists, and a publisher
killed mid-way leaves no marker. Re-publishing to the same URI (a resumed stage saving again) deletes the
marker first, so a reader never takes a mix of two saves for one.

**Fetching** (init-from, resume, evaluate): the files are downloaded into a cache folder
(`$OMNISTAGE_CHECKPOINT_CACHE`, default `~/.cache/omnistage/checkpoints`) named after the URI, each checked
against the manifest's md5, and the folder is swapped in by a rename; a cached copy whose manifest equals the
published one is used without downloading again. Local paths are returned unchanged, as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import fsspec

from components.object_storage import is_remote, join, protocol_of

log = logging.getLogger(__name__)

MARKER = "COMPLETE"
MANIFEST_FORMAT = "omnistage-checkpoint-manifest-v1"
CACHE_ENV = "OMNISTAGE_CHECKPOINT_CACHE"
_CHUNK = 8 << 20
OBJECT_STORE_PROTOCOLS = ("s3", "s3a", "gs", "gcs")  # what a checkpoint can be published to


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(folder: Path) -> dict:
    """relative path -> {size, md5} of every file under a local checkpoint folder."""
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "md5": _md5(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MARKER}  # fmt: skip
    if "meta.json" not in files:
        raise FileNotFoundError(f"{folder} holds no meta.json: not a finished stage checkpoint")
    return {"format": MANIFEST_FORMAT, "files": files}


def stage_checkpoint_uri(root: str, curriculum: str, run_key: str, stage: str) -> str:
    """Where a run's stage publishes its checkpoint under an object-store root: the same layout as the shared
    volume (`ROOT/CURRICULUM/RUN/STAGE/checkpoint`), so a launcher and the next stage compute it alike."""
    return join(root, curriculum, run_key, stage, "checkpoint")


def read_manifest(uri: str) -> dict | None:
    """The published manifest at `uri`, or None when no complete checkpoint is there."""
    fs, path = fsspec.core.url_to_fs(uri)
    try:
        return json.loads(fs.cat_file(f"{path.rstrip('/')}/{MARKER}"))
    except FileNotFoundError:
        return None


def publish_checkpoint(folder: Path, uri: str) -> dict:
    """Upload the local checkpoint `folder` to `uri`, marker last; returns the manifest."""
    manifest = build_manifest(folder)
    fs, root = fsspec.core.url_to_fs(uri)
    root = root.rstrip("/")
    marker = f"{root}/{MARKER}"
    if fs.exists(marker):  # unpublish before overwriting: the old marker must not vouch for new files
        fs.rm_file(marker)
    for rel in manifest["files"]:
        fs.put_file(str(Path(folder) / rel), f"{root}/{rel}")
    fs.invalidate_cache(root)
    stale = [p for p in (fs.find(root) if fs.exists(root) else [])
             if p.removeprefix(root + "/") not in manifest["files"] and p != marker]  # fmt: skip
    if stale:  # files of an earlier save that this one no longer has (e.g. another parallel layout)
        fs.rm(stale)
    fs.pipe_file(marker, json.dumps(manifest, indent=1, sort_keys=True).encode())
    log.info("published checkpoint %s (%d files) to %s", folder, len(manifest["files"]), uri)
    return manifest


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "omnistage" / "checkpoints")


def _cached_copy_matches(folder: Path, manifest: dict) -> bool:
    marker = folder / MARKER
    return marker.is_file() and json.loads(marker.read_text()) == manifest


def fetch_checkpoint(uri: str, into: Path | None = None) -> Path:
    """A verified local copy of the published checkpoint at `uri` (the folder holding meta.json).

    `into` defaults to a cache folder named after the URI; an existing copy with the same manifest is reused.
    """
    manifest = read_manifest(uri)
    if manifest is None:
        raise FileNotFoundError(
            f"no complete checkpoint at {uri}: {uri}/{MARKER} is missing (the stage never published there, "
            "or its upload did not finish); check the URI, or rerun the stage that writes it"
        )
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{uri}/{MARKER} has format {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    target = Path(into) if into else cache_root() / hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:24]
    if _cached_copy_matches(target, manifest):
        return target
    fs, root = fsspec.core.url_to_fs(uri)
    root = root.rstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for rel, expected in manifest["files"].items():
            local = staging / rel
            local.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f"{root}/{rel}", str(local))
            if local.stat().st_size != expected["size"] or _md5(local) != expected["md5"]:
                raise ValueError(f"{uri}/{rel} does not match its manifest (size/md5): the checkpoint object "
                                 "was changed after publication; publish the stage's checkpoint again")  # fmt: skip
        (staging / MARKER).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        old = target.with_name(target.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("fetched checkpoint %s into %s", uri, target)
    return target


def is_published(location: str) -> bool:
    """True for an object-store URI holding a complete published checkpoint (not, e.g., an MLflow artifact
    folder in the same bucket, which has no marker)."""
    return protocol_of(location) in OBJECT_STORE_PROTOCOLS and read_manifest(location) is not None


def _on_rank0(action) -> None:
    """Run `action` on rank 0 alone, between barriers when several processes train: the folder it reads or
    writes must be the one every rank uses (one node, or a staging volume the nodes share, which
    dist_checkpointing needs anyway), and no rank may save into it or read it meanwhile."""
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized()
    if distributed:
        dist.barrier()
    if not distributed or dist.get_rank() == 0:
        action()
    if distributed:
        dist.barrier()


def publish_from_rank0(folder: Path, uri: str) -> None:
    """Publish a checkpoint every rank has finished saving, uploaded once (by rank 0)."""
    _on_rank0(lambda: publish_checkpoint(folder, uri))


def restore_for_resume(uri: str, folder: Path) -> None:
    """Put the checkpoint published at `uri`, if any, into the local checkpoint `folder`: a retried pod on a
    fresh node resumes from it. Nothing happens when nothing was published there yet."""

    def restore() -> None:
        if read_manifest(uri) is not None:
            fetch_checkpoint(uri, into=folder)

    _on_rank0(restore)


def local_checkpoint(location: str | Path) -> Path:
    """A local path for a checkpoint location: the path itself, or a verified cached copy of a URI."""
    return fetch_checkpoint(str(location)) if is_remote(location) else Path(location)
