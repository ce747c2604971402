"""ModuleSpecs for the LongCat LLM: a variant is a spec, not a fork of megatron-core."""

from __future__ import annotations

import functools

from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
from megatron.core.models.backends import LocalSpecProvider
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


def moe_spec(num_experts: int, num_zero_experts: int) -> ModuleSpec:
    """megatron's local MoE spec (SequentialMLP experts) with the zero-computation router and layer."""
    spec = get_moe_module_spec_for_backend(LocalSpecProvider(), num_experts=num_experts, moe_grouped_gemm=False)
    return ModuleSpec(
        module=ZeroComputationMoELayer,
        submodules=MoESubmodules(
            experts=spec.submodules.experts,
            shared_experts=None,
            router=functools.partial(ZeroComputationRouter, num_zero_experts=num_zero_experts),
        ),
    )


def scmoe_layer_spec(num_experts: int, num_zero_experts: int) -> ModuleSpec:
    return ModuleSpec(
        module=ScMoELayer,
        submodules=ScMoELayerSubmodules(dense_layer=dense_layer_spec(), moe=moe_spec(num_experts, num_zero_experts)),
    )


def llm_block_spec(config, num_experts: int, num_zero_experts: int, vp_stage=None) -> TransformerBlockSubmodules:
    """This pipeline stage's ScMoE layers plus the final RMSNorm."""
    from megatron.core import parallel_state

    num_layers = get_num_layers_to_build(config, vp_stage, parallel_state.get_pipeline_model_parallel_rank())
    return TransformerBlockSubmodules(
        layer_specs=[scmoe_layer_spec(num_experts, num_zero_experts)] * num_layers, layer_norm=RMSNorm
    )
