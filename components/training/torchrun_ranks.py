"""Run a worker script on N local processes under torchrun and read back what each rank wrote.

    records = run_ranks(Path("components/bench/parallel_worker.py"), 2, Path("/tmp/x/res"), "--steps", "2")

The script gets `--result RESULT` and must write `RESULT.rankN.pt` (a dict of plain values and tensors) on
every rank. One process runs under torchrun too (world size 1), so both sides take the same code path.
Used by `omnistage bench parallel` and by the multi-process tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_ranks(script: Path, nproc: int, result: Path, *args, timeout: int = 600) -> list[dict]:
    """`script --result RESULT args...` on `nproc` gloo/NCCL processes; returns each rank's RESULT.rankN.pt.

    Raises RuntimeError with the end of the processes' output when the launch fails or times out."""
    # One thread per rank: ranks share the machine's cores (torchrun's own default, made explicit).
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd = [*launcher, str(script), "--result", str(result), *map(str, args)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired as exc:
        output = f"{exc.stdout or ''}{exc.stderr or ''}"[-5000:]  # str or bytes, as far as it got
        raise RuntimeError(f"{script.name} on {nproc} process(es) ran past {timeout} s:\n{output}") from exc
    if proc.returncode != 0:
        raise RuntimeError(f"{script.name} on {nproc} process(es) failed (exit {proc.returncode}):\n"
                           f"{(proc.stdout + proc.stderr)[-5000:]}")  # fmt: skip
    return [torch.load(f"{result}.rank{r}.pt") for r in range(nproc)]
