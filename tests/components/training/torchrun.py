"""Run a test worker script under torchrun (N gloo processes on CPU) and read what each rank wrote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import REPO_ROOT


def run_worker(script: Path, nproc: int, result: Path, *args: str, timeout: int = 300) -> list[dict]:
    """`script --result RESULT args...` on `nproc` processes; returns each rank's RESULT.rankN.pt."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd = [*launcher, str(script), "--result", str(result), *map(str, args)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return [torch.load(f"{result}.rank{r}.pt") for r in range(nproc)]
