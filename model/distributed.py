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


def training_device() -> torch.device:
    """Where this process trains: its own GPU (torchrun's LOCAL_RANK) when CUDA is present, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def backend_for(device: torch.device) -> str:
    """The process-group backend for tensors on `device`: NCCL between GPUs, gloo between CPUs."""
    return "nccl" if device.type == "cuda" else "gloo"


def collective_device() -> torch.device:
    """Where small tensors (counts, loss sums, norms) must be for a collective of the current process group:
    NCCL only moves CUDA tensors, gloo CPU ones."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def init_parallel(sizes: ParallelSizes = ParallelSizes(), seed: int = 1234) -> None:
    """Initialise torch.distributed (from torchrun's env, else a 1-process group) and megatron's groups."""
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    cpu = enable_cpu_compat()
    device = training_device()
    if not dist.is_initialized():
        backend = backend_for(device)
        timeout = process_group_timeout()
        if "RANK" in os.environ:  # started by torchrun
            dist.init_process_group(backend=backend, timeout=timeout)
        else:
            # One process: an explicit address, not os.environ, so child processes (the CLI, KFP's local
            # runner) do not inherit a RANK/MASTER_PORT that points at this process's group.
            init = f"tcp://127.0.0.1:{_free_port()}"
            dist.init_process_group(backend=backend, init_method=init, rank=0, world_size=1, timeout=timeout)
    if device.type == "cuda":
        torch.cuda.set_device(device)
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
