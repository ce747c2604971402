"""ModuleSpecs for the LongCat LLM: a variant is a spec, not a fork of megatron-core."""

from __future__ import annotations

import functools

from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
from megatron.core.models.backends import BackendSpecProvider, LocalSpecProvider
from megatron.core.models.gpt.moe_module_specs import get_moe_module_spec_for_backend
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.mlp import MLP, MLPSubmodules
from megatron.core.transformer.moe.moe_layer import MoESubmodules
from megatron.core.transformer.multi_latent_attention import MLASelfAttention, MLASelfAttentionSubmodules
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build
from megatron.core.transformer.transformer_layer import TransformerLayer, TransformerLayerSubmodules

from model.llm.mla import MLACoreAttention
from model.llm.moe import ZeroComputationMoELayer, ZeroComputationRouter
from model.llm.norms import LatentRMSNorm, RMSNorm
from model.llm.scmoe_layer import ScMoELayer, ScMoELayerSubmodules


def core_attention_class() -> type:
    """Transformer Engine's attention on GPUs where it is installed (needed for context parallelism);
    the local attention otherwise. Core attention holds no parameters, so checkpoints move freely
    between the two."""
    import torch

    if torch.cuda.is_available():
        try:
            from megatron.core.extensions.transformer_engine import TEDotProductAttention

            return TEDotProductAttention
        except ImportError:
            pass
    return MLACoreAttention


def grouped_gemm_available() -> bool:
    """Whether the MoE experts run as one grouped GEMM (megatron's TEGroupedMLP): on GPUs where Transformer
    Engine provides its grouped linear layers; SequentialMLP (one GEMM per expert) otherwise. `transformer_config`
    sets `moe_grouped_gemm` from this, and the spec follows that flag.

    Checkpoints move freely between the two: TEGroupedMLP's sharded state dict is laid out like
    SequentialMLP's (each expert's fc1/fc2 under `...experts.linear_fc{1,2}.weight`, sharded over the global
    expert index, megatron-core 0.16.1 transformer/moe/experts.py), so dist_checkpointing loads either into
    the other, at any expert-parallel size."""
    import torch

    if not torch.cuda.is_available():
        return False
    try:
        from megatron.core.extensions.transformer_engine import TEColumnParallelGroupedLinear
    except ImportError:
        return False
    return TEColumnParallelGroupedLinear is not None  # None when the installed TE predates grouped linears


def dense_layer_spec() -> ModuleSpec:
    """MLA attention + dense SwiGLU FFN, RMSNorm before each (one half of an ScMoE layer)."""
    backend = LocalSpecProvider()
    return ModuleSpec(
        module=TransformerLayer,
        submodules=TransformerLayerSubmodules(
            input_layernorm=RMSNorm,
            self_attention=ModuleSpec(
                module=MLASelfAttention,
                params={"attn_mask_type": AttnMaskType.causal},
                submodules=MLASelfAttentionSubmodules(
                    linear_q_proj=backend.column_parallel_linear(),
                    linear_q_down_proj=backend.column_parallel_linear(),
                    linear_q_up_proj=backend.column_parallel_linear(),
                    linear_kv_down_proj=backend.column_parallel_linear(),
                    linear_kv_up_proj=backend.column_parallel_linear(),
                    core_attention=core_attention_class(),
                    linear_proj=backend.row_parallel_linear(),
                    q_layernorm=LatentRMSNorm,
                    kv_layernorm=LatentRMSNorm,
                ),
            ),
            self_attn_bda=get_bias_dropout_add,
            pre_mlp_layernorm=RMSNorm,
            mlp=ModuleSpec(
                module=MLP,
                submodules=MLPSubmodules(
                    linear_fc1=backend.column_parallel_linear(), linear_fc2=backend.row_parallel_linear()
                ),
            ),
            mlp_bda=get_bias_dropout_add,
        ),
    )


def moe_spec(num_experts: int, num_zero_experts: int, grouped_gemm: bool = False) -> ModuleSpec:
    """megatron's MoE experts with the zero-computation router and layer: TEGroupedMLP (Transformer Engine's
    grouped linears) when `grouped_gemm`, else the local SequentialMLP. Both apply SwiGLU the same way
    (fc1 output chunked into gate and up) with the same weight shapes per expert."""
    backend: BackendSpecProvider = LocalSpecProvider()
    if grouped_gemm:
        from megatron.core.extensions.transformer_engine_spec_provider import TESpecProvider

        backend = TESpecProvider()
    spec = get_moe_module_spec_for_backend(backend, num_experts=num_experts, moe_grouped_gemm=grouped_gemm)
    return ModuleSpec(
        module=ZeroComputationMoELayer,
        submodules=MoESubmodules(
            experts=spec.submodules.experts,
            shared_experts=None,
            router=functools.partial(ZeroComputationRouter, num_zero_experts=num_zero_experts),
        ),
    )


def scmoe_layer_spec(num_experts: int, num_zero_experts: int, grouped_gemm: bool = False) -> ModuleSpec:
    moe = moe_spec(num_experts, num_zero_experts, grouped_gemm)
    return ModuleSpec(module=ScMoELayer, submodules=ScMoELayerSubmodules(dense_layer=dense_layer_spec(), moe=moe))


def llm_block_spec(config, num_experts: int, num_zero_experts: int, vp_stage=None) -> TransformerBlockSubmodules:
    """This pipeline stage's ScMoE layers plus the final RMSNorm; the experts follow `config.moe_grouped_gemm`."""
    from megatron.core import parallel_state

    num_layers = get_num_layers_to_build(config, vp_stage, parallel_state.get_pipeline_model_parallel_rank())
    layer = scmoe_layer_spec(num_experts, num_zero_experts, config.moe_grouped_gemm)
    return TransformerBlockSubmodules(layer_specs=[layer] * num_layers, layer_norm=RMSNorm)
