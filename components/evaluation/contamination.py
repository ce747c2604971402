"""Contamination check: no eval item may be a file the candidate (or any stage before it) trained on.

Training files come from the candidate's lineage (components.tracking.lineage): every stage run back to
the first, each dataset input's manifest, the rows of its train split (the stage runner reads only
those). Content hashes are compared, so a renamed or byte-identical copy is caught; when the manifests
carry perceptual fingerprints (column `fingerprint`, written by ingestion), a re-encoded, resized or
trimmed copy is caught too, with the default near-duplicate thresholds (NearDuplicateSpec()): the check
spans datasets, so no one dataset's settings apply.
"""

from __future__ import annotations

from components.ingest.fingerprint import Fingerprint
from components.ingest.near_duplicates import MATCHED_MODALITIES, NearDuplicateIndex
from components.specs.dataset import NearDuplicateSpec


class ContaminationError(ValueError):
    def __init__(self, overlaps: list[dict]):
        self.overlaps = overlaps
        listed = "; ".join(f"{o['suite']}: {o['key']} (sha256 {o['sha256'][:12]}, {o['kind']} copy of "
                           f"{o['train_path']})" for o in overlaps[:20])  # fmt: skip
        super().__init__(f"{len(overlaps)} eval item(s) were in the candidate's training data: {listed}. "
                         "Remove them from the eval split or retrain without them.")  # fmt: skip


def _train_rows(lineage: dict) -> list[dict]:
    return [row for stage in lineage["stages"] for dataset in stage["datasets"] for row in dataset["files"]
            if row.get("split", "train") == "train"]  # fmt: skip


def training_files(lineage: dict) -> dict[str, str]:
    """sha256 -> path of every train-split file in a lineage_back() result."""
    return {row["sha256"]: row["path"] for row in _train_rows(lineage)}


def _near_indexes(lineage: dict) -> dict[str, NearDuplicateIndex]:
    indexes: dict[str, NearDuplicateIndex] = {}
    for row in _train_rows(lineage):
        if row.get("fingerprint") and row.get("modality") in MATCHED_MODALITIES:
            index = indexes.setdefault(row["modality"], NearDuplicateIndex(row["modality"], NearDuplicateSpec()))
            index.add(row["path"], Fingerprint.from_bytes(row["fingerprint"]))
    return indexes


def find_overlaps(eval_items: dict[str, list[dict]], lineage: dict) -> list[dict]:
    """eval_items: suite -> [{key, sha256, and optionally modality + fingerprint}]; the overlapping items."""
    trained, indexes = training_files(lineage), _near_indexes(lineage)
    overlaps = []
    for suite, items in eval_items.items():
        for item in items:
            found = {"suite": suite, "key": item["key"], "sha256": item["sha256"]}
            if item["sha256"] in trained:
                overlaps.append(found | {"kind": "exact", "train_path": trained[item["sha256"]]})
            elif item.get("fingerprint") and item.get("modality") in indexes:
                match = indexes[item["modality"]].find(Fingerprint.from_bytes(item["fingerprint"]))
                if match is not None:
                    overlaps.append(found | {"kind": "near", "train_path": match.original})
    return overlaps


def check_contamination(eval_items: dict[str, list[dict]], lineage: dict) -> int:
    """Raise ContaminationError on overlap; returns how many training files were checked."""
    overlaps = find_overlaps(eval_items, lineage)
    if overlaps:
        raise ContaminationError(overlaps)
    return len(training_files(lineage))
