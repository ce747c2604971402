"""Context parallelism of the omni sequence: which positions a rank holds, and moving tensors between layouts.

The first pipeline stage assembles the input embedding over the *whole* sequence (text + audio codes +
encoder features, so the encoders always see whole images and clips), then each context-parallel (CP)
rank keeps its share of the positions before the decoder; labels, loss classes, per-token loss weights,
codec targets and first-audio marks are cut the same way on the last stage.

The share is Megatron's load-balanced order (megatron.core.utils.get_batch_on_this_cp_rank): the sequence
is cut into 2*CP equal chunks and rank r holds chunks r and 2*CP-1-r, so under a causal mask every rank
does the same attention work. Megatron's rotary embedding slices its frequencies in the same order
(rope_utils.get_pos_emb_on_this_cp_rank), so positions stay the global 0..S-1.

Attention needs the keys and values of every position: Transformer Engine's attention exchanges them
itself (GPU); `gather_sequence` is the all-gather the local attention uses (model.llm.mla.MLACoreAttention).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def check_sequence(seq_len: int, cp: int) -> None:
    """ValueError unless `seq_len` cuts into 2*CP equal chunks."""
    if seq_len % (2 * cp):
        raise ValueError(f"sequence length {seq_len} is not a multiple of 2 x parallel.context = {2 * cp} "
                         "(context parallelism cuts it into 2 x CP equal chunks); change seq_length")  # fmt: skip


def cp_positions(seq_len: int, cp: int, rank: int) -> torch.Tensor:
    """The global positions rank `rank` of `cp` holds, in its local order (chunks r and 2CP-1-r)."""
    check_sequence(seq_len, cp)
    chunk = seq_len // (2 * cp)
    return torch.cat([torch.arange(c * chunk, (c + 1) * chunk) for c in (rank, 2 * cp - 1 - rank)])


def split_sequence(t: torch.Tensor, dim: int, cp: int, rank: int) -> torch.Tensor:
    """This rank's positions of `t` along `dim` (autograd: the gradient lands on those positions only)."""
    return t.index_select(dim, cp_positions(t.shape[dim], cp, rank).to(t.device))


def unsplit_sequence(parts: list[torch.Tensor], dim: int) -> torch.Tensor:
    """The inverse of `split_sequence`: every rank's part (in rank order) back in sequence order."""
    cp = len(parts)
    seq_len = parts[0].shape[dim] * cp
    order = torch.cat([cp_positions(seq_len, cp, r) for r in range(cp)])
    stacked = torch.cat(parts, dim)
    return stacked.index_select(dim, torch.argsort(order).to(stacked.device))


class _GatherSequence(torch.autograd.Function):
    """Forward: every rank's part, in sequence order. Backward: the gradients of all ranks' uses of the full
    tensor summed (each rank's attention reads every key), then this rank's positions."""

    @staticmethod
    def forward(ctx, part: torch.Tensor, dim: int, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.dim, ctx.group = dim, group
        parts = [torch.empty_like(part) for _ in range(group.size())]
        dist.all_gather(parts, part.contiguous(), group=group)
        return unsplit_sequence(parts, dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()  # gloo reduces into the buffer it is given (PyTorch issue 192920)
        dist.all_reduce(grad, group=ctx.group)
        return split_sequence(grad, ctx.dim, ctx.group.size(), ctx.group.rank()), None, None


def gather_sequence(part: torch.Tensor, dim: int, group: dist.ProcessGroup) -> torch.Tensor:
    """The full sequence from every CP rank's part (autograd-exact; identity for a group of one)."""
    if group.size() == 1:
        return part
    return _GatherSequence.apply(part, dim, group)


class _SumGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.group = group
        return t.view_as(t)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def sum_gradient(t: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """Identity forward; backward sums the gradient over `group`.

    For encoder features that every CP rank holds in full but uses only at its own positions: after the
    sum every CP rank holds the gradient of all features, which the modality bridge's gather expects."""
    if group.size() == 1:
        return t
    return _SumGradient.apply(t, group)
