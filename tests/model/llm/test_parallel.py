"""2-process gloo runs of the tiny LLM (EP=2 all-to-all, TP=2 without sequence parallel) against 1 process.

Each case runs the worker under torchrun with the parallel layout, saves a dist_checkpointing
checkpoint, then loads it into a 1-process model (resharding EP2->EP1, TP2->TP1) and checks that
per-token losses, logits and gradients agree. Only what the run_stage-level layouts of
tests/components/training/test_model_parallel.py (the whole omni training step against one process, its
gradients resharded to one process through a checkpoint) do not run is here: the all-to-all dispatcher
(model.megatron_compat's CPU shims; the stage's `ep2` uses all-gather) and tensor parallel without sequence
parallel on dense MLA layers (where model.llm.mla's RoPE-key gradient fix matters; the stage's `tp2-sp` has
sequence parallel). PP=2 is not repeated here: the stage's `pp2` layout compares its losses and every
gradient (reassembled PP2 -> PP1 from a checkpoint) with one process.
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
    "layout",
    [["--ep", "2", "--dispatcher", "alltoall"], ["--tp", "2", "--dense"]],
    ids=["ep2-alltoall", "tp2-no-sp-mla-rope-grad"],
)
def test_parallel_layout_matches_single_process_after_resharding(tmp_path, layout):
    ckpt = tmp_path / "ckpt"
    _run(2, "--mode", "save", "--ckpt", str(ckpt), "--out", str(tmp_path / "parallel"), *layout)
    dense = [a for a in layout if a == "--dense"]
    _run(1, "--mode", "check", "--ckpt", str(ckpt), "--out", str(tmp_path / "single"), *dense)
    parallel = torch.load(tmp_path / "parallel" / "rank0.pt")
    single = torch.load(tmp_path / "single" / "rank0.pt")
    assert torch.allclose(parallel["per_token_loss"], single["per_token_loss"], atol=1e-5)
    assert torch.allclose(parallel["logits"], single["logits"], atol=1e-4)
    assert len(parallel["grads"]) >= 2  # q and kv down-projections of the first layer's attention(s)
    for name, grad in parallel["grads"].items():
        assert torch.allclose(grad, single["grads"][name], atol=1e-6, rtol=1e-4), name
