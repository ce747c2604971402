"""The shortcut-connected MoE (ScMoE) layer, in the order of REFERENCE.md section 2:

    h = x + MLA_0(norm(x));  u = norm(h)
    m = MoE(u)                                  # reads u; can overlap with the dense path below
    h = h + FFN_0(u);  h = h + MLA_1(norm(h));  out = h + FFN_1(norm(h)) + m

Built from two ordinary megatron TransformerLayers (attention + dense SwiGLU each) and one MoE module,
all given as ModuleSpecs, so tensor/sequence/pipeline/expert parallelism and dist_checkpointing come
from megatron-core unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.spec_utils import ModuleSpec, build_module
from megatron.core.transformer.transformer_layer import BaseTransformerLayer, get_transformer_layer_offset
from megatron.core.utils import get_pg_rank

# What the block hands a layer that its attention sub-layers take. inference_context: the KV cache of
# incremental decoding (model.incremental), one entry per attention sub-layer (each has its layer number).
_ATTENTION_KWARGS = ("rotary_pos_cos", "rotary_pos_sin", "attention_bias", "packed_seq_params", "sequence_len_offset",
                     "inference_context")  # fmt: skip


@dataclass
class ScMoELayerSubmodules:
    dense_layer: ModuleSpec  # TransformerLayer spec: MLA attention + dense SwiGLU FFN
    moe: ModuleSpec  # ZeroComputationMoELayer spec


class ScMoELayer(MegatronModule, BaseTransformerLayer):
    def __init__(
        self,
        config,
        submodules: ScMoELayerSubmodules,
        layer_number: int = 1,
        hidden_dropout: float | None = None,
        pg_collection=None,
        vp_stage: int | None = None,
    ):
        super().__init__(config=config)
        from megatron.core.process_groups_config import ProcessGroupCollection

        pg_collection = pg_collection or ProcessGroupCollection.use_mpu_process_groups()
        # Like TransformerLayer: the block passes a local number, the layer knows its global one.
        offset = get_transformer_layer_offset(config, vp_stage, get_pg_rank(pg_collection.pp))
        self.layer_number = layer_number + offset
        # Dense sub-layers are numbered 2L-1 and 2L over the whole model (L = global ScMoE number). Each
        # TransformerLayer adds the pipeline offset itself, so it is given 2L-1+i minus that offset.
        self.dense_layers = torch.nn.ModuleList(
            build_module(
                submodules.dense_layer,
                config=config,
                layer_number=2 * self.layer_number - 1 + i - offset,
                hidden_dropout=hidden_dropout,
                pg_collection=pg_collection,
                vp_stage=vp_stage,
            )
            for i in range(2)
        )
        self.moe = build_module(
            submodules.moe, config=config, layer_number=self.layer_number, pg_collection=pg_collection
        )

    def forward(
        self, hidden_states, attention_mask=None, context=None, context_mask=None, rotary_pos_emb=None, **kwargs
    ):
        first, second = self.dense_layers
        attention_kwargs = {k: kwargs[k] for k in _ATTENTION_KWARGS if k in kwargs}
        h, _ = first._forward_attention(
            hidden_states, attention_mask=attention_mask, rotary_pos_emb=rotary_pos_emb, **attention_kwargs
        )
        u = first._forward_pre_mlp_layernorm(h)
        moe_out, _ = self.moe(u)
        ffn_out = first.mlp(u)
        with first.bias_dropout_add_exec_handler():
            h = first.mlp_bda(self.training, self.config.bias_dropout_fusion)(ffn_out, h, first.hidden_dropout)
        h, _ = second._forward_attention(
            h, attention_mask=attention_mask, rotary_pos_emb=rotary_pos_emb, **attention_kwargs
        )
        out = second._forward_mlp(h) + moe_out
        return out, context

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (), metadata: dict | None = None):
        # Recurse by hand: megatron treats a plain nn.ModuleList's parameters as replicated, which would
        # drop the tensor-parallel sharding of the dense layers from the checkpoint.
        state = {}
        for index, layer in enumerate(self.dense_layers):
            state.update(layer.sharded_state_dict(f"{prefix}dense_layers.{index}.", sharded_offsets, metadata))
        state.update(self.moe.sharded_state_dict(f"{prefix}moe.", sharded_offsets, metadata))
        return state
