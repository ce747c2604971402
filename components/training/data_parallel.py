"""Data parallelism for a curriculum stage: which process trains on which sequences, and what is refused.

Every process draws the same deterministic stream of packed sequences (mixture + packer, seeded by the
curriculum), so each knows the whole global batch without communication. Global batch `b` is sequences
`b*G .. b*G+G-1` of that stream (G = `global_batch_size`); it is cut into `num_microbatches` chunks of
`dp * micro_batch_size` consecutive sequences, and data-parallel rank `r` trains on sequences
`r*micro .. r*micro+micro-1` of each chunk (Megatron's MegatronPretrainingSampler order). The global
sample cursor (sequences consumed = steps x G) is therefore independent of the number of processes,
which is what lets a checkpoint written at DP=2 resume at DP=1 on the very next sequence.

Tensor, pipeline and expert parallelism come from the stage's `parallel` block; the data-parallel rank
follows Megatron's rank order (tensor fastest, then context, data, pipeline), so every tensor- and
pipeline-parallel rank of one replica trains on the same sequences; so does every context-parallel rank,
and the model keeps its share of each sequence's positions (model.context_parallel), so the sequence
length must cut into 2 x CP chunks (and those into tensor-parallel slices under sequence parallelism).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

from components.specs.curriculum import StageSpec

T = TypeVar("T")


@dataclass(frozen=True)
class DataParallelPlan:
    world: int  # processes in the job
    rank: int
    dp: int  # data-parallel size
    dp_rank: int
    micro_batch: int
    global_batch: int

    @property
    def num_microbatches(self) -> int:
        return self.global_batch // (self.micro_batch * self.dp)

    def local_microbatches(self, global_batch: list[T]) -> list[list[T]]:
        """This rank's micro-batches of one global batch (a list of `global_batch` sequences)."""
        if len(global_batch) != self.global_batch:
            raise ValueError(f"expected {self.global_batch} sequences in a global batch, got {len(global_batch)}")
        chunk = self.dp * self.micro_batch
        start = self.dp_rank * self.micro_batch
        return [global_batch[c + start : c + start + self.micro_batch] for c in range(0, self.global_batch, chunk)]


def launch_world() -> tuple[int, int]:
    """(world size, rank) from torchrun's environment; (1, 0) for a plain process."""
    return int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))


def plan_data_parallel(stage: StageSpec, world: int, rank: int) -> DataParallelPlan:
    """The stage's data-parallel plan at `world` processes; ValueError naming the stage, field and fix."""
    parallel = stage.parallel
    try:
        dp = parallel.data_parallel(world)
    except ValueError as exc:
        raise ValueError(f"stage '{stage.name}' started with {world} process(es): {exc}") from None
    if parallel.context > 1:
        local, tp = stage.seq_length // parallel.context, parallel.tensor
        if stage.seq_length % (2 * parallel.context) or (tp > 1 and local % tp):
            raise ValueError(
                f"stage '{stage.name}': seq_length {stage.seq_length} does not split over parallel.context "
                f"{parallel.context}: it must be a multiple of 2 x context (load-balanced chunks)"
                + (f" x tensor {tp} (sequence parallel)" if tp > 1 else "") + "; change seq_length or parallel.context"
            )
        if not _local_attention():
            raise ValueError(
                f"stage '{stage.name}': parallel.context {parallel.context} on Transformer Engine attention needs "
                "packed sequences in THD format (cu_seqlens per document), which is not built; the stage's "
                "sequences are packed. Set parallel.context to 1, or run where the local attention is used"
            )
    per_step = stage.micro_batch_size * dp
    if stage.global_batch_size % per_step:
        raise ValueError(
            f"stage '{stage.name}': global_batch_size {stage.global_batch_size} is not a multiple of "
            f"micro_batch_size {stage.micro_batch_size} x data parallel {dp} = {per_step}; change the batch "
            f"sizes or the number of processes (--nproc-per-node)"
        )
    # Megatron's default order "tp-cp-ep-dp-pp": rank = tp + TP * (cp + CP * (dp + DP * pp)).
    dp_rank = (rank // (parallel.tensor * parallel.context)) % dp
    return DataParallelPlan(world, rank, dp, dp_rank, stage.micro_batch_size, stage.global_batch_size)


def _local_attention() -> bool:
    """Whether the LLM's attention is the local one (model.llm.mla), which runs CP with a document mask."""
    from model.llm.mla import MLACoreAttention
    from model.llm.spec import core_attention_class

    return issubclass(core_attention_class(), MLACoreAttention)


def total_steps(stage: StageSpec) -> int:
    """Optimizer steps in the stage's budget: `budget.steps`, or tokens / (global batch x sequence length)."""
    if stage.budget.steps is not None:
        return stage.budget.steps
    steps = int(stage.budget.tokens // (stage.global_batch_size * stage.seq_length))
    if steps < 1:
        raise ValueError(
            f"stage '{stage.name}': budget.tokens {stage.budget.tokens:g} is less than one global batch "
            f"({stage.global_batch_size} x {stage.seq_length} tokens); raise the budget"
        )
    return steps
