"""Build the LongCat LLM as a megatron-core GPTModel whose layers are ScMoE layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.models.gpt import GPTModel
from megatron.core.transformer.transformer_config import MLATransformerConfig

from model.config import LLMConfig
from model.distributed import ParallelSizes
from model.llm.mla import register_mla_config
from model.llm.spec import grouped_gemm_available, llm_block_spec


def transformer_config(
    cfg: LLMConfig,
    parallel: ParallelSizes = ParallelSizes(),
    sequence_parallel: bool | None = None,
    dispatcher: str = "allgather",
    params_dtype: torch.dtype = torch.float32,
    perform_initialization: bool = True,
    moe_grouped_gemm: bool | None = None,
) -> MLATransformerConfig:
    """megatron's config for the LLM. `moe_grouped_gemm` None: grouped-GEMM experts wherever they run
    (model.llm.spec.grouped_gemm_available); False forces SequentialMLP experts (e.g. to compare the two)."""
    moe_grouped_gemm = grouped_gemm_available() if moe_grouped_gemm is None else moe_grouped_gemm
    sequence_parallel = parallel.tensor > 1 if sequence_parallel is None else sequence_parallel
    return MLATransformerConfig(
        num_layers=cfg.num_layers,
        hidden_size=cfg.hidden_size,
        num_attention_heads=cfg.num_attention_heads,
        ffn_hidden_size=cfg.ffn_hidden_size,
        q_lora_rank=cfg.q_lora_rank,
        kv_lora_rank=cfg.kv_lora_rank,
        qk_head_dim=cfg.qk_nope_head_dim,
        qk_pos_emb_head_dim=cfg.qk_rope_head_dim,
        v_head_dim=cfg.v_head_dim,
        rope_type="rope",
        rotary_base=cfg.rope_theta,
        normalization="RMSNorm",
        layernorm_epsilon=cfg.norm_eps,
        add_bias_linear=False,
        gated_linear_unit=True,
        activation_func=F.silu,
        num_moe_experts=cfg.num_experts,
        moe_ffn_hidden_size=cfg.expert_ffn_hidden_size,
        moe_router_topk=cfg.topk,
        moe_router_topk_scaling_factor=cfg.routed_scaling_factor,
        moe_router_score_function="softmax",
        moe_router_pre_softmax=True,
        moe_router_load_balancing_type="none",
        moe_router_enable_expert_bias=False,  # ZeroComputationRouter keeps its own bias (see moe.py)
        moe_router_dtype="fp32",
        moe_aux_loss_coeff=0.0,
        moe_token_dispatcher_type=dispatcher,
        moe_grouped_gemm=moe_grouped_gemm,
        tensor_model_parallel_size=parallel.tensor,
        pipeline_model_parallel_size=parallel.pipeline,
        expert_model_parallel_size=parallel.expert,
        context_parallel_size=parallel.context,
        sequence_parallel=sequence_parallel,
        use_cpu_initialization=True,
        perform_initialization=perform_initialization,
        params_dtype=params_dtype,
        pipeline_dtype=params_dtype,
        bf16=params_dtype == torch.bfloat16,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=0.02,
    )


def build_llm(
    cfg: LLMConfig,
    parallel: ParallelSizes = ParallelSizes(),
    pre_process: bool = True,
    post_process: bool = True,
    **config_kwargs,
) -> GPTModel:
    """The LLM (untied lm_head). Call `model.distributed.init_parallel` first."""
    register_mla_config(cfg.kv_lora_rank, cfg.q_lora_rank, cfg.qk_rope_head_dim)
    config = transformer_config(cfg, parallel, **config_kwargs)
    return GPTModel(
        config=config,
        transformer_layer_spec=llm_block_spec(config, cfg.num_experts, cfg.num_zero_experts),
        vocab_size=cfg.vocab_size,
        max_sequence_length=cfg.seq_length,
        pre_process=pre_process,
        post_process=post_process,
        share_embeddings_and_output_weights=False,
        position_embedding_type="none",  # MLA applies its own RoPE to the rope head dims
    )
