"""Where a stage checkpoint's files are (see components/training/checkpoint.py for the format).

Kept free of torch and megatron: lineage and `omnistage status` find checkpoints without loading either.
"""

from __future__ import annotations

import json
from pathlib import Path

CHECKPOINT_DIR = "checkpoint"
META = "meta.json"
FORMAT = "omnistage-dist-v1"


def checkpoint_dir(path: Path) -> Path:
    path = Path(path)
    if (path / META).is_file():
        return path
    for candidate in (path / CHECKPOINT_DIR, path / f"{CHECKPOINT_DIR}.old"):  # .old: killed mid-swap
        if (candidate / META).is_file():
            return candidate
    raise FileNotFoundError(f"no checkpoint at {path} (expected {path / CHECKPOINT_DIR / META}): "
                            "run the stage that writes it first")  # fmt: skip


def read_meta(path: Path) -> dict:
    return json.loads((checkpoint_dir(path) / META).read_text())
