"""Every workaround that lets megatron-core 0.16.1 run on CPU (gloo), in one place.

`enable_cpu_compat()` is a no-op when CUDA is available: on GPUs megatron-core runs unpatched. Without
CUDA it patches, once:

- a CPU RNG-states tracker in place of `model_parallel_cuda_manual_seed`'s CUDA one;
- a TorchFunctionMode that turns `device="cuda"` / `torch.cuda.current_device()` / `.cuda()` into CPU;
- the fp32 grad-norm clip, which asserts `torch.cuda.FloatTensor`;
- the mixed-precision optimizer's constructor (`Float16OptimizerWithFloat16Params`, bf16 stages), which sorts
  parameters by `param.type()` into 'torch.cuda.BFloat16Tensor' / 'torch.cuda.FloatTensor' and refuses any
  other: inside it alone, a CPU tensor's `.type()` answers with the CUDA name of its dtype;
- `moe_utils.te_general_gemm = None` (NameError without Transformer Engine);
- CUDA streams/events used by the all-to-all token dispatcher, its split sizes as host arrays, and
  `torch.cuda.synchronize` (checkpoint saving);
- `multi_latent_attention.HAVE_TE = False` (its isinstance check against a TE mock fails otherwise);
- `rope_utils.get_pos_emb_on_this_cp_rank` (context parallelism) builds its index in pinned memory, which
  needs CUDA: the same load-balanced slice from model.context_parallel instead;
- TorchDynamo off (`torch._dynamo.config.disable`): megatron's `jit_fuser` is `torch.compile`, so without it
  every process compiles the router's expert-bias update (and any other fused helper it reaches) through
  Inductor and a C++ compiler on its first step: ~8 CPU-s per training process on 2 cores (measured on the
  tiny preset: 29.5 -> 21.4 CPU-s for a one-step stage, identical loss) to fuse a few element-wise ops on
  tensors of a few thousand elements, plus a growing on-disk kernel cache. The functions run eagerly.

Each patch names the megatron-core code it replaces; the version is asserted because the patches reach
into private functions that move between releases.
"""

from __future__ import annotations

import contextlib
import threading

import torch
from torch.overrides import TorchFunctionMode

SUPPORTED_MEGATRON_CORE = "0.16.1"
_lock = threading.Lock()
_enabled = False


def _megatron_version() -> str:
    from megatron.core import package_info

    return package_info.__version__


def _pos_emb_on_this_cp_rank(pos_emb: torch.Tensor, seq_dim: int, cp_group) -> torch.Tensor:
    """rope_utils.get_pos_emb_on_this_cp_rank without pinned memory."""
    from model.context_parallel import split_sequence

    return split_sequence(pos_emb, seq_dim, cp_group.size(), cp_group.rank())


class CpuRNGStatesTracker:
    """Named CPU generator states with `fork`, mirroring megatron's CudaRNGStatesTracker API."""

    def __init__(self, *args, **kwargs):
        self.reset()

    def reset(self):
        self.states_: dict[str, torch.Tensor] = {}
        self.seeds_: set[int] = set()
        self._is_initialized = False

    def is_initialized(self) -> bool:
        return self._is_initialized

    def get_states(self) -> dict[str, torch.Tensor]:
        return {name: state.clone() for name, state in self.states_.items()}

    def set_states(self, states: dict[str, torch.Tensor]) -> None:
        self._is_initialized = True
        self.states_ = {name: state.clone() for name, state in states.items()}

    def add(self, name: str, seed: int) -> None:
        if seed in self.seeds_:
            raise ValueError(f"seed {seed} already exists")
        if name in self.states_:
            raise ValueError(f"RNG state {name} already exists")
        self._is_initialized = True
        self.seeds_.add(seed)
        original = torch.get_rng_state()
        torch.manual_seed(seed)
        self.states_[name] = torch.get_rng_state()
        torch.set_rng_state(original)

    @contextlib.contextmanager
    def fork(self, name: str = "model-parallel-rng"):
        if name not in self.states_:
            raise KeyError(f"RNG state {name} is not added")
        original = torch.get_rng_state()
        torch.set_rng_state(self.states_[name])
        try:
            yield
        finally:
            self.states_[name] = torch.get_rng_state()
            torch.set_rng_state(original)


def _is_cuda_device(device) -> bool:
    if isinstance(device, int):
        return True  # torch.cuda.current_device() returned 0
    if isinstance(device, torch.device):
        return device.type == "cuda"
    return isinstance(device, str) and device.startswith("cuda")


class _CpuDeviceMode(TorchFunctionMode):
    """Rewrites CUDA device requests made inside megatron-core into CPU ones."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.cuda:
            return args[0]
        if "device" in kwargs and _is_cuda_device(kwargs["device"]):
            kwargs["device"] = "cpu"
        if func in (torch.Tensor.to,) and args and len(args) > 1 and _is_cuda_device(args[1]):
            args = (args[0], "cpu", *args[2:])
        return func(*args, **kwargs)


_device_mode: _CpuDeviceMode | None = None


class _CudaTypeNames(TorchFunctionMode):
    """`tensor.type()` of a CPU tensor as its CUDA counterpart's name ('torch.FloatTensor' -> 'torch.cuda.
    FloatTensor'): what megatron's mixed-precision optimizer compares against when sorting parameters."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if func is torch.Tensor.type and len(args) == 1 and not kwargs and result.startswith("torch.") \
                and not result.startswith("torch.cuda."):  # fmt: skip
            return "torch.cuda." + result[len("torch.") :]
        return result


def _with_cuda_type_names(init):
    def patched(self, *args, **kwargs):
        with _CudaTypeNames():
            init(self, *args, **kwargs)

    return patched


def model_parallel_cpu_manual_seed(seed: int) -> None:
    """CPU twin of megatron's `model_parallel_cuda_manual_seed`: same names, same seed offsets."""
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import random as mrandom

    tracker = CpuRNGStatesTracker()
    mrandom._CUDA_RNG_STATE_TRACKER = tracker
    mrandom._CUDA_RNG_STATE_TRACKER_INITIALIZED = True
    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    ep_rank = parallel_state.get_expert_model_parallel_rank()
    etp_rank = parallel_state.get_expert_tensor_parallel_rank()
    torch.manual_seed(seed)
    tracker.add(mrandom._DATA_PARALLEL_RNG_TRACKER_NAME, seed)
    tracker.add(mrandom._MODEL_PARALLEL_RNG_TRACKER_NAME, seed + 2718 + tp_rank)
    tracker.add(mrandom._EXPERT_PARALLEL_RNG_TRACKER_NAME, seed + 2718 + 100 * ep_rank + etp_rank + 1)


def _clip_grad_by_total_norm_fp32(parameters, max_norm, total_norm, use_decoupled_grad=False):
    """megatron.core.optimizer.clip_grads.clip_grad_by_total_norm_fp32 without its CUDA type assert."""
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    clip_coeff = max_norm / (total_norm + 1.0e-6)
    if clip_coeff < 1.0:
        for param in parameters:
            grad = param.decoupled_grad if use_decoupled_grad else param.grad
            if grad is not None:
                grad.detach().mul_(clip_coeff)


class _NoStream:
    """Stands in for torch.cuda.Stream/Event in the all-to-all dispatcher's device-to-host copies."""

    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, *args):
        pass

    def record_event(self, *args):
        return self

    def record(self, *args):
        pass

    def synchronize(self):
        pass

    def wait_event(self, *args):
        pass


def _maybe_move_tensor_to_cpu(tensor, as_numpy: bool = False, record_stream: bool = False):
    """moe_utils.maybe_move_tensor_to_cpu, which only converts CUDA tensors; the all-to-all dispatcher
    needs its split sizes as host arrays on CPU too."""
    if torch.is_tensor(tensor) and as_numpy:
        return tensor.detach().numpy()
    return tensor


def enable_cpu_compat() -> bool:
    """Patch megatron-core for CPU if CUDA is absent. Returns True when patches are active."""
    global _enabled, _device_mode
    if torch.cuda.is_available():
        return False
    with _lock:
        if _enabled:
            return True
        version = _megatron_version()
        if version != SUPPORTED_MEGATRON_CORE:
            raise RuntimeError(
                f"model.megatron_compat supports megatron-core {SUPPORTED_MEGATRON_CORE}, found {version}: "
                "re-check each patch against the new release before changing the pin"
            )
        import torch._dynamo.config as dynamo_config
        from megatron.core.models.common.embeddings import rotary_pos_embedding, yarn_rotary_pos_embedding
        from megatron.core.optimizer import clip_grads, optimizer
        from megatron.core.transformer import multi_latent_attention
        from megatron.core.transformer.moe import moe_utils, token_dispatcher

        dynamo_config.disable = True  # megatron's @jit_fuser (torch.compile) runs eagerly on CPU
        moe_utils.te_general_gemm = None
        multi_latent_attention.HAVE_TE = False
        rotary_pos_embedding.get_pos_emb_on_this_cp_rank = _pos_emb_on_this_cp_rank
        yarn_rotary_pos_embedding.get_pos_emb_on_this_cp_rank = _pos_emb_on_this_cp_rank
        clip_grads.clip_grad_by_total_norm_fp32 = _clip_grad_by_total_norm_fp32
        optimizer.clip_grad_by_total_norm_fp32 = _clip_grad_by_total_norm_fp32
        mixed = optimizer.Float16OptimizerWithFloat16Params
        mixed.__init__ = _with_cuda_type_names(mixed.__init__)
        token_dispatcher.MoEAlltoAllTokenDispatcher.cuda_dtoh_stream = _NoStream()
        token_dispatcher.maybe_move_tensor_to_cpu = _maybe_move_tensor_to_cpu
        torch.cuda.current_device = lambda: "cpu"  # megatron passes this as device=
        torch.cuda.current_stream = lambda *a, **k: _NoStream()
        torch.cuda.synchronize = lambda *a, **k: None  # dist_checkpointing preloads tensors "to host"
        torch.cuda.stream = lambda *a, **k: contextlib.nullcontext()
        torch.cuda.Stream = _NoStream
        torch.cuda.Event = _NoStream
        _device_mode = _CpuDeviceMode()
        _device_mode.__enter__()  # process-wide: this process has no CUDA to send anything to
        _enabled = True
    return True
