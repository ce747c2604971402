"""Train/eval assignment: a split label wins; otherwise a deterministic hash draw, of the item's group when
`split.group_field` names a label it has (e.g. speaker), else of its content.

Drawing by group makes the split group-disjoint: every item of one speaker gets that speaker's draw, so
`eval_fraction` is then a share of groups. `check_group_disjoint` runs before probing and refuses split
labels that would still put one group on both sides.
"""

from __future__ import annotations

import hashlib

from components.ingest.discover import InputFile
from components.specs.dataset import DatasetSpec, SplitSpec


def _draws_eval(value: str, split: SplitSpec) -> bool:
    salt = "split:" if split.seed == 0 else f"split:{split.seed}:"  # seed 0: the draws made before seeds existed
    draw = int(hashlib.sha256((salt + value).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return draw < split.eval_fraction


def _group(labels: dict, split: SplitSpec) -> str | None:
    if split.group_field is None or labels.get(split.group_field) is None:
        return None
    return str(labels[split.group_field])  # speaker 12 and "12" (Parquet vs CSV) are one group


def _side_from_labels(labels: dict, split: SplitSpec) -> str | None:
    """The split the item's label or group decides; None when only its content can."""
    labelled = labels.get(split.label_field)
    if labelled is not None:
        return str(labelled)
    group = _group(labels, split)
    if group is not None:
        return "eval" if _draws_eval("group:" + group, split) else "train"
    return None


def assign_split(sha256: str, labels: dict, spec: DatasetSpec) -> str:
    side = _side_from_labels(labels, spec.split)
    if side is not None:
        return side
    return "eval" if _draws_eval(sha256, spec.split) else "train"


def check_group_disjoint(inputs: list[InputFile], spec: DatasetSpec) -> None:
    """Raise when `split.group_field` names no label of any input, or a group would be on two sides."""
    split = spec.split
    if split.group_field is None:
        return
    sides: dict[str, dict[str, str]] = {}  # group -> side -> one input on that side
    for item in inputs:
        group = _group(item.labels, split)
        if group is not None:
            sides.setdefault(group, {}).setdefault(_side_from_labels(item.labels, split), item.url)
    if not sides:
        raise ValueError(
            f"dataset '{spec.name}': split.group_field is '{split.group_field}', but no input has that label; "
            "name a manifest column or sidecar key that every item of a group shares, or unset split.group_field"
        )
    for group, by_side in sorted(sides.items()):
        if len(by_side) > 1:
            examples = ", ".join(f"{side}: {url}" for side, url in sorted(by_side.items()))
            raise ValueError(
                f"dataset '{spec.name}': {split.group_field} {group!r} would be on both sides ({examples}) because "
                f"some of its items carry a '{split.label_field}' label; give all its items the same "
                f"'{split.label_field}', or none so that the group's draw decides"
            )
