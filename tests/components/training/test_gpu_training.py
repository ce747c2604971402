"""run_stage on GPUs (skipped without CUDA; never run on this project's machines, see README): data
parallel 2 on NCCL with megatron's distributed optimizer against one GPU, and one GPU's stage steps.

The same worker as test_model_parallel.py (mp_worker.py: run_stage on the tiny curriculum's multimodal sft
stage, every module trainable, from one initial checkpoint); here the processes pick NCCL and their own
GPU (model.distributed.training_device / backend_for). Tolerance: fp32, but NCCL sums in another order and
cuBLAS picks other kernels than the CPU: 1e-4 relative on the grad norm, 1e-4 absolute on the losses.
"""

import math

import pytest
import torch

from tests.components.training.torchrun import run_worker
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.gpu
WORKER = REPO_ROOT / "tests" / "components" / "training" / "mp_worker.py"


def _need_gpus(count: int) -> None:
    if torch.cuda.device_count() < count:
        pytest.skip(f"needs {count} GPUs, found {torch.cuda.device_count()}")


def _one_gpu(dataset, tmp, steps: int) -> dict:
    return run_worker(WORKER, 1, tmp / "one", "--dataset", dataset, "--out", tmp / "one_out", "--init", tmp / "init",
                      "--save-init", "--steps", steps)[0]  # fmt: skip


def test_stage_steps_on_one_gpu_train(tiny_dataset, tmp_path):
    _need_gpus(1)
    from components.evaluation.scoring import load_checkpoint_model

    one = _one_gpu(tiny_dataset, tmp_path, steps=2)
    assert all(math.isfinite(loss) for loss in one["losses"]) and one["history"][0]["grad_norm"] > 0
    init = dict(load_checkpoint_model(tmp_path / "init").model.named_parameters())
    trained = dict(load_checkpoint_model(tmp_path / "one_out").model.named_parameters())
    assert not torch.equal(init["llm.output_layer.weight"], trained["llm.output_layer.weight"])


def test_dp2_on_nccl_with_distributed_optimizer_matches_one_gpu(tiny_dataset, tmp_path):
    _need_gpus(2)
    from components.training.megatron_step import distributed_optimizer_supported

    assert distributed_optimizer_supported()
    one = _one_gpu(tiny_dataset, tmp_path, steps=2)
    ranks = run_worker(WORKER, 2, tmp_path / "two", "--dataset", tiny_dataset, "--out", tmp_path / "two_out",
                       "--init", tmp_path / "init", "--steps", 2)  # fmt: skip
    for rank in ranks:
        assert rank["order"] == one["order"]
        assert rank["losses"] == pytest.approx(one["losses"], abs=1e-4)
        assert [h["grad_norm"] for h in rank["history"]] == pytest.approx([h["grad_norm"] for h in one["history"]],
                                                                           rel=1e-4)  # fmt: skip
        # (no replica_grad_diff check: the distributed optimizer reduce-scatters, so each rank's gradient
        # buffer is exact only on its own shard)
    assert sorted(ranks[0]["local_order"][0] + ranks[1]["local_order"][0]) == sorted(one["order"][0])
