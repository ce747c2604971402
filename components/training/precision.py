"""A stage's training precision (`precision: fp32 | bf16` in the curriculum), done Megatron's way.

    model = OmniModel(preset, ..., params_dtype=params_dtype(stage.precision))
    module = with_precision(model)       # before the encoders are sharded and megatron's DDP wraps it
    ddp = wrap_model(module); optimizer, _ = build_optimizer(ddp, stage, steps)   # OptimizerConfig(bf16=...)

bf16 is megatron-LM's mixed precision (training.get_model): the LLM is built with `bf16=True` and bf16
`params_dtype`, wrapped in megatron's `Float16Module` (casts the module to bf16; casts outputs of the last
pipeline stage back to fp32), and the optimizer (`OptimizerConfig(bf16=True)`) keeps fp32 main parameters,
fp32 gradients (megatron DDP reduces in fp32) and fp32 Adam state, copying the updated main parameters back
into the bf16 weights after each step. No loss scaling: bf16 has fp32's exponent range.

What stays fp32 under bf16, and why:
- the ViT, the audio encoder (with its projector and CTC head) and the codec. Trained encoders are FSDP2-
  sharded with their own AdamW (components.training.encoder_sharding), which updates the parameters it holds
  in place: bf16 parameters there would mean updates below bf16's resolution are lost (no fp32 master copy).
  Keeping them fp32 is exact and simple; their features are cast to bf16 where they enter the LLM's input
  (model.omni.OmniModel._scatter). The codec encodes training speech and is trained in its own fp32 stage.
- the MoE routers' expert bias and token counts (buffers the bias controller moves in small steps and counts
  in): megatron keeps its own routers' expert bias fp32 for the same reason.
- every loss: the model computes cross entropy on fp32 logits and returns fp32 sums (the omni model's output
  is a dict, which Float16Module passes through unchanged).

Checkpoints hold the weights as trained (bf16 LLM, fp32 encoders); dist_checkpointing copies them into
whatever dtype the loading model has, so evaluation's fp32 model loads them (components.training.checkpoint).
The optimizer checkpoint holds the fp32 main parameters, so a resumed bf16 stage continues from them.
Float16Module is device-agnostic (plain `.bfloat16()` casts): bf16 runs on CPU too, slower than fp32 there.
"""

from __future__ import annotations

import torch
from torch import nn

from model.llm.moe import ZeroComputationRouter
from model.omni import OmniModel

PARAMS_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16}
# OmniModel attributes kept in fp32 under bf16 (see the module docstring)
FP32_MODULES = ("vit", "audio_encoder", "codec")


def params_dtype(precision: str) -> torch.dtype:
    """The dtype the stage's LLM weights are built in (components.specs.curriculum.StageSpec.precision)."""
    if precision not in PARAMS_DTYPE:
        raise ValueError(f"precision {precision!r} is not supported; use one of {list(PARAMS_DTYPE)}")
    return PARAMS_DTYPE[precision]


def with_precision(model: OmniModel) -> nn.Module:
    """The module megatron's DDP wraps: `model` itself in fp32; megatron's Float16Module around it when its LLM
    was built for bf16 (`params_dtype=torch.bfloat16`), with the encoders, codec and router buffers left fp32.

    Call after loading weights and freezing, before sharding the encoders (FSDP2 must see their fp32
    parameters) and before megatron's DDP (its buffers follow the parameters' dtypes)."""
    from megatron.core.transformer.module import Float16Module

    config = model.llm.config
    if not config.bf16:
        return model
    # Float16Module casts everything it holds; the fp32 tensors are put back exactly (not round-tripped through
    # bf16). Parameters keep their identity (the cast replaces their .data), so freezing and hooks stay.
    kept = _fp32_tensors(model)
    wrapped = Float16Module(config, model)
    for module, kind, name, tensor in kept:
        if kind == "param":
            module._parameters[name].data = tensor
        else:
            module._buffers[name] = tensor
    return wrapped


def _fp32_tensors(model: OmniModel) -> list[tuple[nn.Module, str, str, torch.Tensor]]:
    """(owner, "param" | "buffer", name, current tensor) of every floating tensor that stays fp32."""
    owners = [m for name in FP32_MODULES if (top := getattr(model, name)) is not None for m in top.modules()]
    routers = [m for m in model.llm.modules() if isinstance(m, ZeroComputationRouter)]
    kept = []
    for owner in owners:
        kept += [(owner, "param", n, p.data) for n, p in owner._parameters.items() if p is not None]
    for owner in owners + routers:
        kept += [(owner, "buffer", n, b) for n, b in owner._buffers.items() if b is not None and b.is_floating_point()]
    return kept


def omni_model(module: nn.Module) -> OmniModel:
    """The omni model inside megatron's wrappers (DDP, Float16Module)."""
    while not isinstance(module, OmniModel):
        module = module.module
    return module
