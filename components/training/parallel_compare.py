"""Compare a stage trained on N processes (any tensor/expert/pipeline/data layout) with one process.

Used by `omnistage bench parallel` (components.bench.parallel_scaling) and by the 2-process tests
(tests/components/training/test_model_parallel.py):

    curriculum, stage = layout_stage(curriculum, "sft", ParallelSizes(tensor=2), seq_length=512)
    # in each rank, after run_stage(..., inspect_grads=keep) filled `grads`:
    save_gradients(folder, build_stage_model(curriculum, stage, tokenizer), grads, curriculum.preset, tokenizer)
    # in one process:
    full = load_gradients(folder, one_process_model, curriculum.preset)
    worst, name = worst_relative_diff(full, reference)

Gradients travel as checkpoints whose weights are gradients: each rank saves its shards under the
parameters' names (megatron dist_checkpointing), and loading that into a one-process model reassembles the
tensor/expert/pipeline shards, so every parameter's full gradient can be compared by name.
"""

from __future__ import annotations

from pathlib import Path

import torch

from components.specs.curriculum import MODULES, CurriculumSpec, StageSpec
from model.distributed import ParallelSizes

# Every module a stage can train except the codec, which only its own stage trains (codec_stage).
EVERY_TRAINED_MODULE = [m for m in MODULES if m != "codec"]


def layout_stage(curriculum: CurriculumSpec, stage_name: str, sizes: ParallelSizes, *, seq_length: int,
                 global_batch_size: int = 2, micro_batch_size: int = 1, mixture: dict[str, float] | None = None,
                 preset: str | None = None) -> tuple[CurriculumSpec, StageSpec]:  # fmt: skip
    """The curriculum reduced to one stage, with every module but the codec trainable (so every gradient
    is compared; but the audio projector when speech goes in as CTC posteriors, which bypass it), the given
    parallel sizes and batch shape, from scratch (no init_from), optionally on another data mixture or model
    preset. Returns (curriculum, stage)."""
    stage = curriculum.stage(stage_name)
    bypassed = ["audio_encoder_projector"] if stage.audio_input == "ctc_posteriors" else []
    parallel = stage.parallel.model_copy(update={"tensor": sizes.tensor, "pipeline": sizes.pipeline,
                                                 "expert": sizes.expert, "context": sizes.context})  # fmt: skip
    update = {"global_batch_size": global_batch_size, "micro_batch_size": micro_batch_size, "parallel": parallel,
              "seq_length": seq_length, "train": [m for m in EVERY_TRAINED_MODULE if m not in bypassed], "freeze": [],
              "init_from": None}  # fmt: skip
    if mixture is not None:
        update["data"] = stage.data.model_copy(update={"mixture": mixture})
    stage = stage.model_copy(update=update)
    return curriculum.model_copy(update={"stages": [stage], "preset": preset or curriculum.preset}), stage


def build_stage_model(curriculum: CurriculumSpec, stage: StageSpec, tokenizer_path: Path):
    """The omni model as run_stage builds it, in the current (megatron) parallel state."""
    from model import tokenizer as tok
    from model.config import get_preset
    from model.omni import OmniModel

    preset = get_preset(curriculum.preset, llm={"rope_theta": stage.rope_theta, "seq_length": stage.seq_length})
    tokenizer = tok.load_tokenizer(tokenizer_path)
    return OmniModel(preset, tok.special_id(tokenizer, tok.VISION_PAD), tok.special_id(tokenizer, tok.AUDIO_PAD),
                     stage.parallel.megatron_sizes(), audio_input=stage.audio_input)  # fmt: skip


def save_model(folder: Path, model, preset: str, tokenizer_path: Path) -> None:
    """`model`'s weights as a checkpoint (no training state), loadable at any layout."""
    from components.training.checkpoint import save_checkpoint

    save_checkpoint(folder, model, {}, {"preset": preset}, files={"tokenizer.json": tokenizer_path})


def save_gradients(folder: Path, holder, grads: dict[str, torch.Tensor], preset: str, tokenizer_path: Path) -> None:
    """This rank's named gradients as a checkpoint: `holder` (a model of the same layout, so the same names
    and shards) takes them as its weights; a parameter without a gradient (frozen, unused) is saved as zeros."""
    with torch.no_grad():
        for name, param in holder.named_parameters():
            param.copy_(grads[name].to(param.dtype)) if name in grads else param.zero_()
    save_model(folder, holder, preset, tokenizer_path)


def load_gradients(folder: Path, model, preset: str) -> dict[str, torch.Tensor]:
    """A gradient checkpoint (save_gradients, any layout) loaded into `model` (one process): full gradients
    by parameter name. Overwrites `model`'s weights."""
    from components.training.checkpoint import load_weights

    load_weights(folder, model, preset)
    return {name: param.detach().clone() for name, param in model.named_parameters()}


def worst_relative_diff(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> tuple[float, str]:
    """(largest relative difference, its parameter) over `want`'s tensors. Relative to the tensor's largest
    reference magnitude, not element-wise: near-zero elements of a gradient would otherwise dominate. A
    parameter whose reference gradient is all zeros counts its absolute difference (over 1e-12)."""
    missing = sorted(set(want) - set(got))
    if missing:
        raise ValueError(f"no gradient to compare for {missing[:5]} ({len(missing)} parameters)")
    return max((float((got[n] - want[n]).abs().max() / want[n].abs().max().clamp(min=1e-12)), n) for n in want)


def replica_grad_diff(model, grads: dict[str, torch.Tensor]) -> float:
    """Largest difference of a replicated (not tensor- or expert-sharded) gradient across the tensor x data
    parallel ranks of this pipeline stage: they must all hold the same full gradient. Collective: every
    rank calls it."""
    from megatron.core import parallel_state

    group = parallel_state.get_tensor_and_data_parallel_group()
    params = dict(model.named_parameters())
    worst = torch.zeros(())
    for name, grad in sorted(grads.items()):
        param = params[name]
        if getattr(param, "tensor_model_parallel", False) or not getattr(param, "allreduce", True):
            continue
        first = grad.clone()
        torch.distributed.broadcast(first, src=torch.distributed.get_global_rank(group, 0), group=group)
        worst = torch.maximum(worst, (grad - first).abs().max())
    torch.distributed.all_reduce(worst, op=torch.distributed.ReduceOp.MAX)
    return float(worst)
