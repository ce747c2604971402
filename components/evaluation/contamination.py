"""Contamination check: no eval item may be a file the candidate (or any stage before it) trained on.

Training files come from the candidate's lineage (components.tracking.lineage): every stage run back to
the first, each dataset input's manifest, the rows of its train split (the stage runner reads only
those). Content hashes are compared, so a renamed or re-encoded-identical copy is caught too.
"""

from __future__ import annotations


class ContaminationError(ValueError):
    def __init__(self, overlaps: list[dict]):
        self.overlaps = overlaps
        listed = "; ".join(f"{o['suite']}: {o['key']} (sha256 {o['sha256'][:12]}, trained as {o['train_path']})"
                           for o in overlaps[:20])  # fmt: skip
        super().__init__(f"{len(overlaps)} eval item(s) were in the candidate's training data: {listed}. "
                         "Remove them from the eval split or retrain without them.")  # fmt: skip


def training_files(lineage: dict) -> dict[str, str]:
    """sha256 -> path of every train-split file in a lineage_back() result."""
    files = {}
    for stage in lineage["stages"]:
        for dataset in stage["datasets"]:
            for row in dataset["files"]:
                if row.get("split", "train") == "train":
                    files[row["sha256"]] = row["path"]
    return files


def find_overlaps(eval_items: dict[str, list[dict]], trained: dict[str, str]) -> list[dict]:
    """eval_items: suite -> [{key, sha256}]; returns the overlapping items."""
    return [{"suite": suite, "key": item["key"], "sha256": item["sha256"], "train_path": trained[item["sha256"]]}
            for suite, items in eval_items.items() for item in items if item["sha256"] in trained]  # fmt: skip


def check_contamination(eval_items: dict[str, list[dict]], lineage: dict) -> int:
    """Raise ContaminationError on overlap; returns how many training files were checked."""
    trained = training_files(lineage)
    overlaps = find_overlaps(eval_items, trained)
    if overlaps:
        raise ContaminationError(overlaps)
    return len(trained)
