"""Process-group set-up for megatron-core: one process (tests, laptops) or torchrun (gloo or NCCL)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from model.megatron_compat import enable_cpu_compat, model_parallel_cpu_manual_seed
from model.pg_timeout import process_group_timeout


@dataclass(frozen=True)
class ParallelSizes:
    tensor: int = 1
    pipeline: int = 1
    expert: int = 1
    context: int = 1

    def world_size_needed(self) -> int:
        return self.tensor * self.pipeline * self.context


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_parallel(sizes: ParallelSizes = ParallelSizes(), seed: int = 1234) -> None:
    """Initialise torch.distributed (from torchrun's env, else a 1-process group) and megatron's groups."""
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    cpu = enable_cpu_compat()
    if not dist.is_initialized():
        backend = "gloo" if cpu else "nccl"
        timeout = process_group_timeout()
        if "RANK" in os.environ:  # started by torchrun
            dist.init_process_group(backend=backend, timeout=timeout)
        else:
            # One process: an explicit address, not os.environ, so child processes (the CLI, KFP's local
            # runner) do not inherit a RANK/MASTER_PORT that points at this process's group.
            init = f"tcp://127.0.0.1:{_free_port()}"
            dist.init_process_group(backend=backend, init_method=init, rank=0, world_size=1, timeout=timeout)
    if not cpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=sizes.tensor,
        pipeline_model_parallel_size=sizes.pipeline,
        expert_model_parallel_size=sizes.expert,
        context_parallel_size=sizes.context,
    )
    (model_parallel_cpu_manual_seed if cpu else model_parallel_cuda_manual_seed)(seed)


def teardown_parallel() -> None:
    from megatron.core import parallel_state

    parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
