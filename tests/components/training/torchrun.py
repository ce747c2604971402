"""Run a test worker script under torchrun (N gloo processes on CPU) and read what each rank wrote."""

from __future__ import annotations

from pathlib import Path

from components.training.torchrun_ranks import run_ranks


def run_worker(script: Path, nproc: int, result: Path, *args: str, timeout: int = 300) -> list[dict]:
    """`script --result RESULT args...` on `nproc` processes; returns each rank's RESULT.rankN.pt (the test
    fails with the processes' output when the run does)."""
    return run_ranks(script, nproc, result, *args, timeout=timeout)
