"""Restore a dataset version's shard folder from a DVC remote, from the version alone.

A dataset version (stats.json, MLflow) is DVC's md5 of the shard folder, `<md5>.dir`. A DVC 3 remote is
content-addressed: `REMOTE/files/md5/<2 hex>/<30 hex>` holds each file, and the `.dir` object is a JSON
list of `{"md5", "relpath"}`. So the folder is rebuilt from the remote and the version with no dvc.lock,
no git history and no DVC cache: what a pod on a cluster needs, and what
`omnistage dataset pull NAME VERSION` runs. Every file is checked against its md5 before it is placed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import fsspec

_VERSION = re.compile(r"^[0-9a-f]{32}(\.dir)?$")


def _object_path(root: str, md5: str) -> str:
    return f"{root.rstrip('/')}/files/md5/{md5[:2]}/{md5[2:]}"


def restore_version(remote_url: str, version: str, out: str | Path) -> dict:
    """Write the files of shard-folder version `version` from the DVC remote `remote_url` into `out`;
    files already there with the right content are kept. Returns what was restored."""
    if not _VERSION.match(version):
        raise ValueError(f"version {version!r} is not a DVC folder version (32 hex digits + '.dir')")
    version = version if version.endswith(".dir") else version + ".dir"
    fs, root = fsspec.core.url_to_fs(remote_url)
    try:
        listing = json.loads(fs.cat_file(_object_path(root, version)))
    except FileNotFoundError:
        raise ValueError(
            f"version {version} is not on the DVC remote {remote_url}: was it pushed (omnistage dataset build/"
            "commit with --remote), and is this the remote it was pushed to?"
        ) from None
    out = Path(out)
    expected = {entry["relpath"] for entry in listing}
    foreign = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) if out.is_dir() else []
    foreign = [name for name in foreign if name not in expected]
    if foreign:
        raise ValueError(
            f"{out} holds files that version {version} does not ({', '.join(foreign[:5])}): restore into an "
            "empty folder or the version's own, or delete them first"
        )
    num_written = num_bytes = 0
    for entry in listing:
        target = out / entry["relpath"]
        if target.is_file() and hashlib.md5(target.read_bytes()).hexdigest() == entry["md5"]:
            continue
        data = fs.cat_file(_object_path(root, entry["md5"]))
        if hashlib.md5(data).hexdigest() != entry["md5"]:
            raise ValueError(f"{remote_url}: object {entry['md5']} ({entry['relpath']}) is corrupt")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        num_written += 1
        num_bytes += len(data)
    return {"version": version, "out": str(out), "files": len(listing), "downloaded": num_written, "bytes": num_bytes}
