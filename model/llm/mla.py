"""Multi-latent attention as LongCat uses it, on megatron-core's MLASelfAttention.

Three pieces megatron-core 0.16.1 lacks or gets wrong without Transformer Engine:
- `MLACoreAttention`: the local DotProductAttention rejects MLA's separate key and value widths, and
  context parallelism (it asserts CP == 1); this one all-gathers the keys and values of the CP ranks;
- LongCat's latent scaling (see `norms.LatentRMSNorm`);
- at TP > 1 without sequence parallelism, the shared RoPE key's gradient is not summed over TP ranks
  (upstream NVIDIA/Megatron-LM issue 1699). `RopeAwareGather` all-reduces those gradient columns.
"""

from __future__ import annotations

import copy

import torch
from megatron.core import parallel_state
from megatron.core.tensor_parallel import mappings
from megatron.core.transformer import multi_latent_attention
from megatron.core.transformer.dot_product_attention import DotProductAttention

from model.context_parallel import gather_sequence

# gathered width -> trailing RoPE columns, for each MLA config built in this process
_ROPE_TAIL_BY_WIDTH: dict[int, int] = {}


class MLACoreAttention(DotProductAttention):
    """Local dot-product attention with key width k_channels and value width v_channels, at any CP size.

    Under context parallelism the queries are this rank's positions (model.context_parallel order), the
    keys and values are all-gathered into sequence order, and the attention mask must be the
    [B, 1, local S, S] rows of this rank's queries (OmniModel builds it): the parent's default causal mask
    is square. Memory is that of the full [local S, S] score matrix, as without CP."""

    def __init__(self, config, *args, k_channels: int | None = None, v_channels: int | None = None, **kwargs):
        local = copy.copy(config)
        local.context_parallel_size = 1  # the parent asserts it; the CP exchange is done here
        super().__init__(local, *args, **kwargs)
        self.cp_size = config.context_parallel_size
        if v_channels is not None:
            self.hidden_size_per_partition = v_channels * self.num_attention_heads_per_partition

    def forward(self, query, key, value, attention_mask, *args, **kwargs):
        if self.cp_size > 1:
            if attention_mask is None:
                raise ValueError("context-parallel local attention needs the [B, 1, local S, S] mask rows")
            group = parallel_state.get_context_parallel_group()
            key, value = gather_sequence(key, 0, group), gather_sequence(value, 0, group)  # [S, B, heads, dim]
        return super().forward(query, key, value, attention_mask, *args, **kwargs)


class RopeAwareGather(torch.autograd.Function):
    """All-gather along the last dim; backward sums the RoPE-key columns over TP, then keeps own slice."""

    @staticmethod
    def forward(ctx, input_, group, rope_dim):
        ctx.group, ctx.rope_dim = group, rope_dim
        return mappings._gather_along_last_dim(input_, group)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        tail = grad[..., -ctx.rope_dim :].contiguous()
        torch.distributed.all_reduce(tail, group=ctx.group)
        grad[..., -ctx.rope_dim :] = tail
        return mappings._split_along_last_dim(grad, ctx.group), None, None


def _gather_from_tp_region(input_, group=None):
    group = group if group is not None else parallel_state.get_tensor_model_parallel_group()
    full_width = input_.size(-1) * group.size()
    rope_dim = _ROPE_TAIL_BY_WIDTH.get(full_width)
    if rope_dim and group.size() > 1:
        return RopeAwareGather.apply(input_, group, rope_dim)
    return mappings.gather_from_tensor_model_parallel_region(input_, group)


def register_mla_config(kv_lora_rank: int, q_lora_rank: int | None, rope_dim: int) -> None:
    """Route the kv-latent gather of this config through the RoPE-aware gather."""
    width = kv_lora_rank + rope_dim
    if q_lora_rank == width:
        raise ValueError(f"q_lora_rank ({q_lora_rank}) must differ from kv_lora_rank + rope dim ({width})")
    _ROPE_TAIL_BY_WIDTH[width] = rope_dim
    multi_latent_attention.gather_from_tensor_model_parallel_region = _gather_from_tp_region
