"""Held-out eval items: the `eval` split of an ingested dataset, read from its WebDataset shards."""

from __future__ import annotations

import json
from pathlib import Path

import webdataset as wds

from components.specs.evals import EvalSuiteSpec


def dataset_version(folder: Path) -> str | None:
    stats = json.loads((Path(folder) / "stats.json").read_text())
    return (stats.get("version") or {}).get("version")


def manifest_fingerprints(folder: Path) -> dict[str, bytes]:
    """sha256 -> perceptual fingerprint of each item of an ingested dataset (none before fingerprints)."""
    import pyarrow.parquet as pq

    manifest = Path(folder) / "manifest.parquet"
    if "fingerprint" not in pq.read_schema(manifest).names:
        return {}
    table = pq.read_table(manifest, columns=["sha256", "fingerprint"]).to_pylist()
    return {row["sha256"]: row["fingerprint"] for row in table if row["fingerprint"]}


def load_eval_samples(suite: EvalSuiteSpec, datasets: dict[str, Path]) -> list[dict]:
    """The suite's items (raw samples with parsed JSON), sorted by key; checks the pinned data version."""
    name = suite.data.dataset
    if name not in datasets:
        raise ValueError(f"suite {suite.name} needs dataset '{name}'; given: {sorted(datasets)} (--dataset NAME=DIR)")
    folder = Path(datasets[name])
    version = dataset_version(folder)
    if suite.data.version != "latest" and suite.data.version != version:
        raise ValueError(f"suite {suite.name} pins {name} version {suite.data.version}, {folder} holds {version}: "
                         "check out that version (dvc checkout) or set version: latest")  # fmt: skip
    samples = split_samples(folder, suite.family, suite.data.split)
    return samples[: suite.max_items] if suite.max_items else samples


def split_samples(folder: Path, family: str, split: str) -> list[dict]:
    """Raw samples (parsed JSON) of one task family and split of an ingested dataset, sorted by key."""
    samples = []
    shards = sorted(str(p) for p in (Path(folder) / "shards").glob("*.tar"))
    for raw in wds.WebDataset(shards, shardshuffle=False, empty_check=False):
        meta = json.loads(raw["json"])
        if meta.get("split") == split and meta.get("task_family", meta.get("modality")) == family:
            samples.append({**raw, "json": meta})
    samples.sort(key=lambda s: s["json"]["key"])
    return samples


def split_metadata(folder: Path, family: str, split: str) -> list[dict]:
    """The parsed JSON of every sample of one task family and split, sorted by key; reads only the JSON
    members of the shards (no media), e.g. the training transcripts a blind-prior baseline draws from."""
    import tarfile

    metas = []
    for shard in sorted((Path(folder) / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(member).read())
                    if meta.get("split") == split and meta.get("task_family", meta.get("modality")) == family:
                        metas.append(meta)
    return sorted(metas, key=lambda m: m["key"])
