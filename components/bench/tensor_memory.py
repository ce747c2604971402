"""Peak bytes of tensor storage allocated inside a code region (CPU or GPU), for memory claims in tests/benches.

    with TensorMemory() as memory:
        out = bridge.gather(local)
    memory.peak_bytes  # the most storage bytes alive at once that the region allocated (inputs not counted)

Counts every storage an ATen op creates inside the region (a TorchDispatchMode sees each op's outputs:
an output on a storage none of the op's inputs uses is a new allocation), from its creation until its last
tensor dies; storages from before the region (inputs, and in-place results on them) are not counted. On
CPU torch keeps no allocator statistics (`torch.cuda.max_memory_allocated` is GPU-only), hence this.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class TensorMemory(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._holders: dict[int, int] = {}  # storage data pointer -> tracked tensors still alive on it

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor) or not tensor.untyped_storage().nbytes():
                continue
            pointer = tensor.untyped_storage().data_ptr()
            if pointer in self._holders or pointer not in inputs:  # a new storage, or a view of a tracked one
                self._track(tensor, pointer)
        return out

    def _track(self, tensor: torch.Tensor, pointer: int) -> None:
        nbytes = tensor.untyped_storage().nbytes()
        if pointer not in self._holders:
            self._holders[pointer] = 0
            self.live_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        self._holders[pointer] += 1
        weakref.finalize(tensor, self._release, pointer, nbytes)

    def _release(self, pointer: int, nbytes: int) -> None:
        self._holders[pointer] -= 1
        if not self._holders[pointer]:
            del self._holders[pointer]
            self.live_bytes -= nbytes
