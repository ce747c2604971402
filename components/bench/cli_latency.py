"""`omnistage bench cli`: wall time of the everyday commands, each a fresh process as a user starts it.

Measures `omnistage --help`, `status`, `status --json`, `lineage <champion>` and `lineage --input-file` on
the store `make run` leaves (or the one given), `repeats` times each, and reports the median and the
worst in seconds, plus whether bytecode was precompiled for the venv (the first-order cause of slow
starts on machines that set PYTHONDONTWRITEBYTECODE). The goal for `status` is < 3 s on the 2-core
reference machine.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _omnistage() -> list[str]:
    script = Path(sys.executable).with_name("omnistage")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "components.cli"]


def _bytecode_precompiled() -> bool:
    """True when the venv holds compiled bytecode for torch (what uv --compile-bytecode writes)."""
    import importlib.util

    spec = importlib.util.find_spec("torch")
    return bool(spec and spec.origin and Path(importlib.util.cache_from_source(spec.origin)).is_file())


def _time(command: list[str], repeats: int) -> dict:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
        seconds.append(time.perf_counter() - started)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return {"median_s": round(statistics.median(seconds), 3), "max_s": round(max(seconds), 3)}


def run_benchmark(tracking_uri: str, model_name: str, input_file: Path | None, repeats: int = 3) -> dict:
    from components.promotion.registry import registry_status

    if registry_status(model_name, tracking_uri)["champion"] is None:
        raise ValueError(f"{model_name} has no champion in {tracking_uri}: run `make run` first")
    cli, store = _omnistage(), ["--tracking-uri", tracking_uri]
    commands = {
        "help": ["--help"],
        "status": ["status", "--name", model_name, *store],
        "status_json": ["status", "--name", model_name, *store, "--json"],
        "lineage_back": ["lineage", f"models:/{model_name}@champion", *store],
    }
    if input_file is not None:
        commands["lineage_forward"] = ["lineage", "--input-file", str(input_file), *store]
    results = {name: _time(cli + args, repeats) for name, args in commands.items()}
    return {"bytecode_precompiled": _bytecode_precompiled(), "repeats": repeats, "cpus": os.cpu_count(),
            "commands": results, "status_goal_met": results["status"]["median_s"] < 3.0}  # fmt: skip
