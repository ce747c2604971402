"""Plan and write WebDataset shards: deterministic bytes, atomic publishing, resumable.

Shards are planned from probe facts before any decoding (`plan_shards`), so shard k always holds the same
samples and each shard can be written on its own: by any worker, after a crash, in any order. A shard is
written to `NAME.tar.tmp` (in the output folder, or in the local staging folder of an object-storage
output); its result record goes to `.work/` first and publishing the tar comes last (a rename, or one
upload), so a visible `.tar` always means a finished shard. Tar headers carry fixed times, owners and modes.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from components.ingest.output_store import SHARDS, WORK, OutputStore

SHARD_SUFFIX = ".tar"
SHARD_PATTERN = "shard-{index:06d}" + SHARD_SUFFIX


@dataclass
class ShardPlan:
    index: int
    name: str
    members: list[str]  # sha256 of each input, in write order
    estimated_bytes: int = 0


@dataclass
class ShardResult:
    name: str
    written: list[dict] = field(default_factory=list)  # {sha256, key, num_frames}
    failed: list[dict] = field(default_factory=list)  # {sha256, reason}
    num_bytes: int = 0
    plan_digest: str = ""  # the plan this shard was written for; a changed plan never reuses it


def plan_shards(items: list[tuple[str, int]], max_bytes: int, first_index: int = 0) -> list[ShardPlan]:
    """Group (sha256, estimated_bytes) items, already in their final order, into shards under max_bytes.
    `first_index` numbers shards added after existing ones (a retry of quarantined inputs)."""
    plans: list[ShardPlan] = []
    current: ShardPlan | None = None
    for sha, size in items:
        if current is None or (current.members and current.estimated_bytes + size > max_bytes):
            index = first_index + len(plans)
            current = ShardPlan(index=index, name=SHARD_PATTERN.format(index=index), members=[])
            plans.append(current)
        current.members.append(sha)
        current.estimated_bytes += size
    return plans


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class DeterministicTarWriter:
    """A tar writer whose bytes depend only on the members' names and contents."""

    def __init__(self, path: Path):
        self._fh = open(path, "wb")
        self._tar = tarfile.open(fileobj=self._fh, mode="w", format=tarfile.USTAR_FORMAT)

    def add(self, name: str, data: bytes) -> None:
        self._tar.addfile(_tar_info(name, len(data)), io.BytesIO(data))

    def close(self) -> None:
        self._tar.close()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()


def shard_path(shard_name: str) -> str:
    return f"{SHARDS}/{shard_name}"


def result_path(shard_name: str) -> str:
    return f"{WORK}/{shard_name}.result.json"


def staged_shard(store: OutputStore, shard_name: str) -> Path:
    """Where a shard is written before it is published."""
    return store.staged(shard_path(shard_name) + ".tmp")


def is_shard_done(store: OutputStore, shard_name: str) -> bool:
    return store.exists(shard_path(shard_name)) and store.exists(result_path(shard_name))


def load_result(store: OutputStore, shard_name: str) -> ShardResult:
    return ShardResult(**json.loads(store.read_bytes(result_path(shard_name))))


def commit_shard(tmp_tar: Path, result: ShardResult, store: OutputStore) -> None:
    """Publish a finished shard: result record first, then the atomic rename or single upload that makes
    the tar visible."""
    save_result(store, result)
    store.publish(tmp_tar, shard_path(result.name))


def save_result(store: OutputStore, result: ShardResult) -> None:
    store.write_bytes(result_path(result.name), json.dumps(result.__dict__, sort_keys=True).encode())


def remove_stale_temporaries(shard_dir: Path) -> int:
    """Delete `.tmp` leftovers of a killed run; they are never read."""
    stale = list(shard_dir.glob("*.tmp"))
    for path in stale:
        path.unlink()
    return len(stale)
