"""Modality-decoupled parallelism, encoder side: FSDP2/HSDP sharding of the ViT and the audio encoder.

REFERENCE.md section 7: the encoders share ranks with the LLM but are parallelised apart from it, with
hybrid-sharded data parallel and full activation recomputation, whatever the LLM's TP/PP/EP layout.

    mesh = encoder_mesh(EncoderParallelConfig(shard_size=8))     # (replicate, shard) over every rank
    shard_encoders(model, mesh, EncoderParallelConfig(), ModalityBridge(tp_cp_group))  # in place, pre-optimizer

- Each transformer block / FSMN layer is its own FSDP unit (parameters gathered just in time, freed after
  use) and is recomputed in backward (composable `checkpoint`, which keeps parameter names unchanged, so
  checkpoints and the curriculum's module groups still match). The projectors are units of their own: the
  audio projector is called outside the encoder's `forward` (`to_llm`), so the root unit would not gather it.
- The mesh is 2-D `(replicate, shard)`: parameters are sharded within a shard group and replicated across
  groups (HSDP); `shard_size = world` is plain FSDP, `shard_size = 1` plain replication.
- Gradients are *summed* over the mesh, not averaged: the trainer's loss is already normalised by the
  global batch (components.training.megatron_step), as megatron DDP is told with `calculate_per_token_loss`.
  Sum-only collectives are also what gloo supports: FSDP2's default reduce-scatter uses AVG (world > 1) or
  PREMUL_SUM (a custom divide factor), and gloo rejects both ("Cannot use ReduceOp.PREMUL_SUM with Gloo"),
  so `set_force_sum_reduction_for_comms(True)` makes the same code run on CPU (gloo) and GPUs (NCCL).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist
from torch import nn

from model.modality_bridge import ModalityBridge


@dataclass(frozen=True)
class EncoderParallelConfig:
    shard_size: int | None = None
    """Ranks one parameter is sharded over (HSDP's inner dimension); None = all ranks (plain FSDP)."""
    activation_checkpointing: bool = True
    """Recompute every block's activations in backward (the report's "full activation recomputation")."""

    def mesh_shape(self, world: int) -> tuple[int, int]:
        """(replicate, shard) sizes at `world` ranks; ValueError when the shard size does not divide it."""
        shard = world if self.shard_size is None else self.shard_size
        if shard < 1 or world % shard:
            raise ValueError(f"encoder shard_size {shard} does not divide the world size {world}: use a divisor "
                             f"of {world} (or None for all ranks)")  # fmt: skip
        return world // shard, shard


def encoder_mesh(config: EncoderParallelConfig):
    """The encoders' own 2-D device mesh over every rank, independent of megatron's groups."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(_device(), config.mesh_shape(dist.get_world_size()), mesh_dim_names=("replicate", "shard"))


def group_mesh(group: dist.ProcessGroup):
    """A 1-D (plain FSDP) mesh over an existing process group's ranks, e.g. the ranks of one pipeline stage:
    only those ranks call it, and no new process group is created."""
    from torch.distributed.device_mesh import DeviceMesh

    return DeviceMesh.from_group(group, _device(), mesh_dim_names=("shard",))


def hybrid_group_mesh(group: dist.ProcessGroup, config: EncoderParallelConfig):
    """The encoders' mesh over an existing process group's ranks (e.g. one pipeline stage's), shaped by
    `config.shard_size`: None gives 1-D `("shard",)`, plain FSDP over the whole group (`group_mesh`, no new
    process group); a size gives 2-D `("replicate", "shard")`, HSDP (one replica when it is the group's size),
    whose shard groups are runs of consecutive ranks (one node's GPUs when shard_size <= GPUs per node, so
    parameter all-gathers stay on the node's fabric).

    Collective over the whole world: every rank calls it with its own group (the groups must partition the
    world, as megatron's per-pipeline-stage groups do), because torch creates each new process group on every
    rank. ValueError when the shard size does not divide the group."""
    import torch
    from torch.distributed.device_mesh import DeviceMesh

    replicate, shard = config.mesh_shape(group.size())
    if config.shard_size is None:
        return group_mesh(group)
    everyone: list[list[int]] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(everyone, sorted(dist.get_process_group_ranks(group)))
    layouts = [torch.tensor(ranks).view(replicate, shard) for ranks in sorted({tuple(r) for r in everyone})]
    mine = {}
    # same order on every rank (new_group's contract): all shard rows, then all replicate columns
    for dim, subgroups in (("shard", [row for mesh in layouts for row in mesh]),
                           ("replicate", [col for mesh in layouts for col in mesh.T])):  # fmt: skip
        for ranks in subgroups:
            made = dist.new_group(ranks.tolist())
            if dist.get_rank() in ranks.tolist():
                mine[dim] = made
    layout = next(mesh for mesh in layouts if dist.get_rank() in mesh.flatten().tolist())
    return DeviceMesh.from_group([mine["replicate"], mine["shard"]], _device(), mesh=layout,
                                 mesh_dim_names=("replicate", "shard"))  # fmt: skip


def _device() -> str:
    return "cuda" if dist.get_backend() == "nccl" else "cpu"


ENCODERS = ("vit", "audio_encoder")
_BLOCKS = {"vit": "blocks", "audio_encoder": "layers"}  # each encoder's repeated units (FSDP + recomputation)


def _units(model, names) -> list[nn.Module]:
    """The FSDP units inside the named encoders, innermost first (fully_shard wants children first)."""
    return [unit for n in names for unit in (*getattr(getattr(model, n), _BLOCKS[n]), getattr(model, n).projector)]


def _recomputed(model, names) -> list[nn.Module]:
    return [block for n in names for block in getattr(getattr(model, n), _BLOCKS[n])]


def shard_encoders(model, mesh, config: EncoderParallelConfig, bridge: ModalityBridge,
                   encoders: tuple[str, ...] = ENCODERS) -> list[nn.Module]:  # fmt: skip
    """Shard the named encoders (default both: `model.vit`, `model.audio_encoder`) in place over `mesh`;
    returns every FSDP unit. An encoder left out stays a plain (replicated) module, still called through
    the bridge.

    From then on the model encodes through `bridge` (model.modality_bridge): its group is the ranks that
    hold the same batch in the LLM's layout (tensor x context parallel; one rank at pure data parallel),
    and every rank runs both encoders on every micro-batch, as FSDP's collectives need. Call after freezing
    (frozen parameters are sharded too and simply get no gradient) and before any optimizer holds the
    encoders' parameters (they become DTensors).
    """
    from torch.distributed._composable import checkpoint
    from torch.distributed.fsdp import fully_shard

    unknown = set(encoders) - set(ENCODERS)
    if unknown:
        raise ValueError(f"shard_encoders: unknown encoders {sorted(unknown)}; known: {list(ENCODERS)}")
    if config.activation_checkpointing:
        for module in _recomputed(model, encoders):
            checkpoint(module)
    units = [fully_shard(module, mesh=mesh) for module in _units(model, encoders)]
    units += [fully_shard(getattr(model, name), mesh=mesh) for name in encoders]
    for unit in units:
        unit.set_gradient_divide_factor(1.0)
        unit.set_force_sum_reduction_for_comms(True)
    model.encoder_bridge = bridge
    return units


def encoder_parameters(model) -> list[nn.Parameter]:
    return [*model.vit.parameters(), *model.audio_encoder.parameters()]
