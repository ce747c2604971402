"""2-process gloo runs of the tiny ScMoE LLM (TP=2, EP=2 all-to-all, PP=2) against 1 process.

Each case runs the worker under torchrun with the parallel layout, saves a dist_checkpointing
checkpoint, then loads it into a 1-process model (resharding TP2->TP1, EP2->EP1, PP2->PP1) and checks
that per-token losses, logits and gradients agree. TP=2 with sequence parallel and EP=2 on the default
all-gather dispatcher are the `tp2-sp` and `ep2` layouts of tests/components/training/test_model_parallel.py
(the whole omni training step against one process); here each parallel dimension is resharded to one
process once, and the all-to-all dispatcher (model.megatron_compat's CPU shims) gets its only run.
"""

import os
import socket
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO_ROOT

WORKER = REPO_ROOT / "tests" / "model" / "llm" / "parallel_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(nproc: int, *args: str) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(WORKER), *args]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("layout", "last_rank"),
    [
        (["--ep", "2", "--dispatcher", "alltoall"], 0),
        (["--pp", "2"], 1),
        (["--tp", "2", "--dense"], 0),
    ],
    ids=["ep2-alltoall", "pp2", "tp2-no-sp-mla-rope-grad"],
)
def test_parallel_layout_matches_single_process_after_resharding(tmp_path, layout, last_rank):
    ckpt = tmp_path / "ckpt"
    _run(2, "--mode", "save", "--ckpt", str(ckpt), "--out", str(tmp_path / "parallel"), *layout)
    dense = [a for a in layout if a == "--dense"]
    _run(1, "--mode", "check", "--ckpt", str(ckpt), "--out", str(tmp_path / "single"), *dense)
    parallel = torch.load(tmp_path / "parallel" / f"rank{last_rank}.pt")
    single = torch.load(tmp_path / "single" / "rank0.pt")
    assert torch.allclose(parallel["per_token_loss"], single["per_token_loss"], atol=1e-5)
    if "logits" in parallel:
        assert torch.allclose(parallel["logits"], single["logits"], atol=1e-4)
        assert len(parallel["grads"]) >= 2  # q and kv down-projections of the first layer's attention(s)
        for name, grad in parallel["grads"].items():
            assert torch.allclose(grad, single["grads"][name], atol=1e-6, rtol=1e-4), name
