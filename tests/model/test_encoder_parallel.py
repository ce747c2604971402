"""FSDP2-sharded encoders + ModalityBridge at 2 gloo ranks against one unsharded process (the worker:
encoder_parallel_worker.py), and the bridge's chunked memory."""

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO_ROOT

WORKER = REPO_ROOT / "tests" / "model" / "encoder_parallel_worker.py"
# fp32; the sharded side sums the two ranks' encoder gradients in another order than one backward does
GRAD_RTOL = 1e-5


def _run(nproc: int, result) -> list[dict]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd = [*launcher, str(WORKER), "--result", str(result)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, cwd=REPO_ROOT)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return [torch.load(f"{result}.rank{r}.pt") for r in range(nproc)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return _run(2, tmp_path_factory.mktemp("encoder_parallel") / "two")


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["shared", "dp", "hsdp"])
def test_sharded_encoder_gradients_match_one_process(runs, layout):
    for rank in runs:
        reference = rank[f"reference_{'dp' if layout == 'hsdp' else layout}"]  # HSDP runs the dp layout
        if layout == "hsdp":
            assert rank["hsdp_mesh"] == (("replicate", "shard"), (2, 1))
        unused = {n for n in rank["names"] if ".ctc_head." in n}  # the omni model does not use the CTC head
        assert set(reference) == set(rank["names"]) - unused  # every other encoder parameter has a gradient
        assert rank["sharded_names"] == rank["names"]  # recomputation + sharding keep parameter names
        assert set(rank[layout]) == set(reference)
        for name, grad in reference.items():
            scale = grad.abs().max().clamp(min=1e-12)
            assert (rank[layout][name] - grad).abs().max() <= GRAD_RTOL * scale, name


@pytest.mark.slow
def test_bridge_staging_memory_is_one_over_num_chunks(runs):
    memory = runs[0]["memory"]
    gathered = memory[1]["gathered"]
    incoming = gathered // 2  # split_sequence's backward: the rank's own slice of the gradient, materialised
    forward = {k: m["forward_peak"] - gathered for k, m in memory.items()}
    backward = {k: m["backward_peak"] - gathered - incoming for k, m in memory.items()}
    assert forward[1] > 0 and backward[1] > 0
    assert forward[4] <= forward[1] / 4 * 1.001 and backward[4] <= backward[1] / 4 * 1.001, memory
