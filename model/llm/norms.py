"""RMSNorm for megatron-core layers, tagged for sequence parallelism, with an optional output scale.

Under sequence parallelism a norm sees only its rank's slice of the sequence, so its weight gradient is
partial; megatron's `finalize_model_grads` all-reduces parameters tagged `sequence_parallel=True`.
The output scale implements LongCat's MLA latent scaling (q latent times sqrt(hidden / q_lora_rank),
kv latent times sqrt(hidden / kv_lora_rank)); it is exact because the up-projections have no bias.
"""

from __future__ import annotations

import math

import torch
from megatron.core.transformer.transformer_config import TransformerConfig


class RMSNorm(torch.nn.Module):
    def __init__(self, config: TransformerConfig, hidden_size: int, eps: float = 1e-5, output_scale: float = 1.0):
        super().__init__()
        self.eps = eps
        self.output_scale = output_scale
        self.weight = torch.nn.Parameter(torch.ones(hidden_size, dtype=config.params_dtype))
        self.weight.sequence_parallel = bool(config.sequence_parallel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        out = normed.to(dtype) * self.weight
        return out * self.output_scale if self.output_scale != 1.0 else out


class LatentRMSNorm(RMSNorm):
    """RMSNorm of an MLA latent (q or kv), scaled by sqrt(hidden_size / latent rank)."""

    def __init__(self, config: TransformerConfig, hidden_size: int, eps: float = 1e-5):
        super().__init__(config, hidden_size, eps, output_scale=math.sqrt(config.hidden_size / hidden_size))
