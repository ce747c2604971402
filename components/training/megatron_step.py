"""One optimizer step of a stage on Megatron-Core's machinery, at any data-parallel size.

- The omni model is wrapped in megatron's `DistributedDataParallel`: its gradient buffer holds only
  trainable parameters (frozen modules get no buffer and stay frozen), and `finalize_model_grads`
  all-reduces it over the data-parallel group. Trained encoders are not in it when `run_stage` shards them
  (components.training.encoder_sharding: FSDP2, their own AdamW, clipped jointly with the LLM: pass
  `encoders` to `train_step`); without that (`encoders=None`) megatron DDP treats their parameters like any
  dense parameter, which is exact for replicated encoders.
- `get_megatron_optimizer(OptimizerConfig(...))` (Adam with decoupled weight decay; megatron exempts
  biases and norm weights from weight decay) and `OptimizerParamScheduler` (warmup from lr/warmup_steps,
  then constant / linear / cosine to `min_lr` over the stage's steps).
- `get_forward_backward_func()` runs `num_microbatches` micro-batches. The loss is normalised globally:
  each micro-batch returns loss *sums* (model.omni.OmniModel.loss_terms), divided by the denominators of
  the whole global batch (all-reduced over data parallel before the forward pass), so gradients are
  sums over ranks and micro-batches with no further scaling: `calculate_per_token_loss` makes megatron
  DDP sum rather than average, and the finalize step is told there is no token count left to divide by.
  Result: the same loss and gradients as one process on the same global batch, whatever DP.
- Context parallel: every CP rank of a replica gets the same micro-batches; the counts come from whole
  sequences, so they are summed over data parallel only, while each CP rank's loss sums cover its own
  positions and are summed over data x context parallel (megatron DDP reduces gradients over both).

Precision: a bf16 stage hands `wrap_model` megatron's Float16Module around the omni model
(components.training.precision); DDP reduces gradients in fp32 and `build_optimizer` then builds megatron's
mixed-precision optimizer (fp32 main parameters). fp32 stages run exactly as before.

The distributed optimizer (ZeRO-1 sharding of optimizer state) is GPU-only in megatron-core 0.16.1 (its
buffers and collectives assume CUDA/NCCL), so on CPU (gloo) the optimizer state is replicated; on GPUs
`use_distributed_optimizer` is switched on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from components.specs.curriculum import StageSpec
from components.training.encoder_sharding import ShardedEncoders
from components.training.losses import IMPLEMENTED_LOSSES
from components.training.precision import omni_model
from model.distributed import collective_device
from model.omni import OmniBatch, loss_counts, loss_names, mean_losses

# Stage loss weight -> the mean losses (model.omni.mean_losses) it multiplies; `codec` trains in a loop of
# its own (components.training.codec_stage), not here.
WEIGHTED_LOSSES: dict[str, tuple[str, ...]] = {name: src.parts for name, src in IMPLEMENTED_LOSSES.items() if src.parts}


def check_loss_weights(stage_name: str, weights: dict[str, float]) -> None:
    """Refuse a stage whose loss weights name a loss this trainer does not compute."""
    unknown = sorted(set(weights) - set(WEIGHTED_LOSSES))
    if unknown:
        raise ValueError(f"stage '{stage_name}': loss_weights {unknown} are not implemented by the omni trainer; "
                         f"implemented: {list(WEIGHTED_LOSSES)} (data_specs/curriculum: remove the weight or "
                         f"train it in a stage of its own)")  # fmt: skip


def weighted_loss(losses: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """The stage's objective from its mean losses (REFERENCE.md section 6 loss weights).

    Exactly the named weights count: a loss the stage does not name weighs 0, and a named loss whose
    targets are absent from the batch contributes 0 (its mean over no targets).
    """
    # 0 x every loss keeps a micro-batch without any weighted target in the graph (megatron runs backward on it).
    total = sum(0.0 * loss for loss in losses.values())
    for name, weight in weights.items():
        if name not in WEIGHTED_LOSSES:
            raise ValueError(f"loss weight '{name}' is not implemented; implemented: {list(WEIGHTED_LOSSES)}")
        for part in WEIGHTED_LOSSES[name]:
            if part in losses:
                total = total + weight * losses[part]
    return total


def distributed_optimizer_supported() -> bool:
    return torch.cuda.is_available()


def wrap_model(model: nn.Module):
    """megatron DDP around the omni model, or around the Float16Module holding it (a bf16 stage:
    components.training.precision.with_precision); call after freezing (only trainable parameters get buffers).
    Gradients are reduced in fp32 whatever the weights' dtype."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads

    config = omni_model(model).llm.config
    config.calculate_per_token_loss = True  # DDP sums gradients: the loss is already globally normalised
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True, overlap_grad_reduce=False, use_distributed_optimizer=distributed_optimizer_supported()
    )
    ddp = DistributedDataParallel(config=config, ddp_config=ddp_config, module=model)
    config.no_sync_func = ddp.no_sync
    # Megatron would divide gradients by the schedule's token count; ours are already divided.
    config.finalize_model_grads_func = lambda chunks, num_tokens=None, **kw: finalize_model_grads(chunks, None, **kw)
    return ddp


def build_optimizer(ddp, stage: StageSpec, steps: int, clip_grad: float | None = None):
    """(megatron optimizer, OptimizerParamScheduler) for the stage's optimizer and schedule blocks.

    `clip_grad` overrides the stage's `optimizer.grad_clip` (0: megatron does not clip, because `train_step`
    clips the LLM's gradients together with the sharded encoders'). A model built for bf16 gets megatron's
    mixed-precision optimizer: fp32 main parameters and gradients, copied back to the bf16 weights each step."""
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    opt, schedule = stage.optimizer, stage.schedule
    model_config = omni_model(ddp).llm.config
    config = OptimizerConfig(
        bf16=model_config.bf16, params_dtype=model_config.params_dtype,
        optimizer="adam", lr=opt.lr, min_lr=schedule.min_lr, weight_decay=opt.weight_decay,
        adam_beta1=opt.betas[0], adam_beta2=opt.betas[1],
        clip_grad=opt.grad_clip if clip_grad is None else clip_grad,
        use_distributed_optimizer=distributed_optimizer_supported(),
    )  # fmt: skip
    optimizer = get_megatron_optimizer(config, [ddp])
    warmup = schedule.warmup_steps
    scheduler = OptimizerParamScheduler(
        optimizer, init_lr=opt.lr / warmup if warmup else opt.lr, max_lr=opt.lr, min_lr=schedule.min_lr,
        lr_warmup_steps=warmup, lr_decay_steps=max(steps, warmup + 1), lr_decay_style=schedule.name,
        start_wd=opt.weight_decay, end_wd=opt.weight_decay, wd_incr_steps=max(steps, 1), wd_incr_style="constant",
    )  # fmt: skip
    return optimizer, scheduler


@dataclass
class StepOutput:
    losses: dict[str, float]  # global mean losses (identical on every rank) and "loss", the objective
    grad_norm: float
    token_losses: list[torch.Tensor | None]  # per micro-batch [micro, S] text token losses; None: LLM not run


def all_reduce_sum(values: torch.Tensor, with_context_parallel: bool = True) -> torch.Tensor:
    """Sum over the data-parallel group, and over context parallel unless told not to (float64: counts stay
    exact). Quantities every CP rank computes from the whole sequence (counts) pass False."""
    from megatron.core import parallel_state

    values = values.double().to(collective_device())
    group = parallel_state.get_data_parallel_group(with_context_parallel=with_context_parallel)
    torch.distributed.all_reduce(values, group=group)
    return values.cpu()


def from_last_stage(values: torch.Tensor) -> torch.Tensor:
    """`values` as the last pipeline stage has them (where the losses are computed), on every stage."""
    from megatron.core import parallel_state

    if parallel_state.get_pipeline_model_parallel_world_size() > 1:
        values = values.contiguous().to(collective_device())
        torch.distributed.broadcast(values, src=parallel_state.get_pipeline_model_parallel_last_rank(),
                                    group=parallel_state.get_pipeline_model_parallel_group())  # fmt: skip
    return values.cpu()


def train_step(ddp, optimizer, scheduler, microbatches: list[OmniBatch], weights: dict[str, float],
               inspect_grads: Callable[[dict[str, torch.Tensor]], None] | None = None,
               encoders: ShardedEncoders | None = None) -> StepOutput:  # fmt: skip
    """Forward/backward over this rank's micro-batches, reduce gradients over DP, step optimizer and LR.

    `encoders`: FSDP-sharded encoders outside megatron's DDP (build the optimizer with `clip_grad=0`):
    FSDP reduces their gradients in backward; they are clipped jointly with the LLM's and stepped at the
    LR megatron's scheduler gives this step.

    Micro-batches must share one shape when pipeline stages exchange activations (megatron sends fixed
    [S(/TP), micro, hidden] tensors); `token_losses` is filled on the last pipeline stage only."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    # Fixed names on every rank (a rank whose micro-batches have no audio still joins the all-reduce).
    omni = omni_model(ddp)
    names = loss_names(len(omni.preset.codec.codebook_sizes))
    wanted = frozenset(name for name, weight in weights.items() if weight)  # only ctc: no LLM forward
    local = torch.zeros(len(names), dtype=torch.float64)
    for batch in microbatches:
        for name, count in loss_counts(batch, wanted).items():
            local[names.index(name)] += count
    counts = dict(zip(names, all_reduce_sum(local, with_context_parallel=False)))
    token_losses: list[torch.Tensor] = []

    def loss_func(terms: dict[str, torch.Tensor]):
        loss = weighted_loss(mean_losses(terms, counts), weights)  # linear in the sums: adds up to the global loss
        return loss, torch.tensor(1, dtype=torch.int), {k: v.detach() for k, v in terms.items()}

    def forward_step(data_iterator, model):
        # loss sums on the last stage, hidden states before it
        output = model(next(data_iterator), sums=True, losses=wanted)
        if omni.last_stage:
            token_losses.append(omni.last_text_token_losses)  # None without the LLM forward
        return output, partial(loss_func)

    ddp.zero_grad_buffer()
    optimizer.zero_grad()
    if encoders is not None:
        encoders.zero_grad()
    reported = get_forward_backward_func()(
        forward_step_func=forward_step, data_iterator=iter(microbatches), model=[ddp],
        num_microbatches=len(microbatches), seq_length=microbatches[0].input_ids.shape[1],
        micro_batch_size=microbatches[0].input_ids.shape[0], forward_only=False,
    )  # fmt: skip
    if inspect_grads is not None:
        grads = {n: p.main_grad.detach().clone() for n, p in omni.named_parameters() if hasattr(p, "main_grad")}
        inspect_grads({**grads, **(encoders.full_grads() if encoders is not None else {})})
    if encoders is not None:
        # this step's LR as megatron's groups have it (the scheduler moves it after the step); asked of the
        # scheduler, since a stage may train encoders only (megatron's optimizer then holds no parameters)
        lr = scheduler.get_lr({})
        grad_norm = encoders.clip_jointly(optimizer)
        optimizer.step()
        encoders.step(lr)
    else:
        _, grad_norm, _ = optimizer.step()
    scheduler.step(increment=1)
    local_sums = torch.tensor([float(sum(r.get(n, 0.0) for r in reported)) for n in names])
    sums = from_last_stage(all_reduce_sum(local_sums))
    means = mean_losses({n: sums[i] for i, n in enumerate(names) if counts[n] > 0}, counts)
    losses = {k: float(v) for k, v in means.items()}
    losses["loss"] = float(weighted_loss(means, weights))
    return StepOutput(losses, float(grad_norm or 0.0), token_losses)
