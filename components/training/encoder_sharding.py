"""The stage runner's modality-decoupled encoders: FSDP2-sharded ViT / audio encoder beside megatron's LLM.

`run_stage` shards every encoder the stage trains (`vit`/`vit_projector` -> the ViT, `audio_encoder`/
`audio_encoder_projector` -> the audio encoder) with FSDP2 (model.encoder_parallel) over a mesh of its own:
every rank of the first pipeline stage (the ranks that hold the encoders: tensor x data [x context]
parallel), whatever the LLM's TP/EP layout, shaped by the stage's `parallel.encoders` block (shard_size ->
HSDP, activation_checkpointing, bridge_chunks; components.specs.curriculum.EncoderParallelSpec). The
batch's images and clips are split between the ranks that hold the same batch (tensor parallel) and their
features reach the LLM through a model.modality_bridge.ModalityBridge, which sends the gradients back.
Always on, at every world size: one process takes the same path on a mesh of one rank, so parameters split
between the two optimizers the same way at every size (a stage saved at DP=2 resumes at DP=1).
A frozen encoder is neither sharded nor optimised: it stays a plain module (called through the bridge when
the other encoder is sharded).

Sharded parameters are DTensors, which megatron's DDP and optimizer cannot hold, so they are hidden from
both (`hidden_from_megatron`: megatron skips frozen parameters) and trained here by `torch.optim.AdamW`
with megatron's settings: megatron's Adam without apex/TE *is* torch's AdamW; the stage's betas, weight
decay (biases and 1-D parameters exempt, as megatron does), eps 1e-8, and at every step the LR megatron's
scheduler gives its own parameters (warmup and decay alike). Clipping is joint: one norm over LLM and
encoder gradients (`clip_jointly`, megatron's formula), so megatron's own clipping is switched off.

Checkpoints: whole tensors. The weights go through megatron's dist_checkpointing as replicated tensors
(components.training.checkpoint gathers them; dist_checkpointing writes each once) so evaluation and every
layout load them unchanged; the optimizer state is gathered whole into each rank's training-state file.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from components.specs.curriculum import ENCODER_OF, StageSpec
from model.distributed import collective_device
from model.encoder_parallel import EncoderParallelConfig, hybrid_group_mesh, shard_encoders
from model.modality_bridge import ModalityBridge


def trains_beyond_encoders(stage: StageSpec) -> bool:
    """Whether megatron's optimizer holds anything: the stage trains a module other than the encoders."""
    return bool(set(stage.train) - set(ENCODER_OF))


@dataclass
class ShardedEncoders:
    """The trained encoders of one rank (none on later pipeline stages), their optimizer and clipping."""

    model: nn.Module
    names: tuple[str, ...]  # sharded encoders: model attributes
    trainable: list[nn.Parameter]
    optimizer: torch.optim.AdamW | None
    clip_grad: float
    shard_group: torch.distributed.ProcessGroup | None  # the mesh's shard dimension: each shard once

    @classmethod
    def build(cls, model: nn.Module, stage: StageSpec) -> ShardedEncoders | None:
        """Shard the stage's trained encoders (call after freezing, before megatron's DDP and optimizer).

        None when the stage trains no encoder (megatron then trains and clips alone, as before); on a later
        pipeline stage (no encoders here) an empty one, which still joins the joint clipping."""
        from megatron.core import parallel_state

        names = tuple(sorted({ENCODER_OF[m] for m in stage.train if m in ENCODER_OF}))
        if not names:
            return None
        spec = stage.parallel.encoders
        mesh_group = parallel_state.get_tensor_and_data_parallel_group(with_context_parallel=True)
        try:
            spec.check_mesh(mesh_group.size())
        except ValueError as exc:  # the curriculum cannot know the world size torchrun gave this run
            raise ValueError(f"stage '{stage.name}' at {torch.distributed.get_world_size()} processes, pipeline "
                             f"{stage.parallel.pipeline}: {exc}") from None  # fmt: skip
        config = EncoderParallelConfig(spec.shard_size, spec.activation_checkpointing)
        mesh = hybrid_group_mesh(mesh_group, config)  # every rank, also those without encoders: a collective
        if model.vit is None:
            return cls(model, (), [], None, stage.optimizer.grad_clip, None)
        bridge = ModalityBridge(parallel_state.get_tensor_and_context_parallel_group(), encoder_group=mesh_group,
                                num_chunks=spec.bridge_chunks)  # fmt: skip
        shard_encoders(model, mesh, config, bridge, names)
        named = [(n, p) for e in names for n, p in getattr(model, e).named_parameters() if p.requires_grad]
        opt = stage.optimizer
        no_decay = [p for n, p in named if n.endswith(".bias") or p.dim() == 1]
        decay = [p for _, p in named if all(p is not q for q in no_decay)]
        groups = [{"params": ps, "weight_decay": wd} for ps, wd in ((decay, opt.weight_decay), (no_decay, 0.0)) if ps]
        optimizer = torch.optim.AdamW(groups, lr=opt.lr, betas=tuple(opt.betas), eps=1e-8) if groups else None
        # the gradient norm sums each shard once: over the shard dimension only (HSDP replicas hold copies)
        return cls(model, names, [p for _, p in named], optimizer, opt.grad_clip, mesh.get_group("shard"))

    @contextmanager
    def hidden_from_megatron(self) -> Iterator[None]:
        """Encoder parameters look frozen while megatron's DDP and optimizer are built (they skip them)."""
        for param in self.trainable:
            param.requires_grad_(False)
        try:
            yield
        finally:
            for param in self.trainable:
                param.requires_grad_(True)

    def zero_grad(self) -> None:
        for param in self.trainable:
            param.grad = None

    def full_grads(self) -> dict[str, torch.Tensor]:
        """Name -> whole gradient of every trainable encoder parameter (collective over the encoder mesh)."""
        return {f"{e}.{n}": p.grad.full_tensor().detach().clone()
                for e in self.names for n, p in getattr(self.model, e).named_parameters()
                if p.requires_grad and p.grad is not None}  # fmt: skip

    @torch.no_grad()
    def clip_jointly(self, megatron_optimizer) -> float:
        """Clip LLM and encoder gradients by their joint norm (megatron's formula); returns the norm.

        The same on every rank: megatron's norm is reduced over its model-parallel ranks; the encoders'
        squared norm over the encoder mesh's shard dimension (each shard once), then over the pipeline (only the first
        stage holds encoders)."""
        from megatron.core import parallel_state

        megatron_optimizer.prepare_grads()  # main_grad -> grad, what megatron's norm and step read
        llm_norm = float(megatron_optimizer.get_grad_norm() or 0.0)
        grads = [p.grad for p in self.trainable if p.grad is not None]
        encoder_sq = torch.zeros(1, dtype=torch.float64, device=collective_device())
        for grad in grads:
            encoder_sq += grad.to_local().double().pow(2).sum()
        if self.shard_group is not None:
            torch.distributed.all_reduce(encoder_sq, group=self.shard_group)
        if parallel_state.get_pipeline_model_parallel_world_size() > 1:
            torch.distributed.all_reduce(encoder_sq, group=parallel_state.get_pipeline_model_parallel_group())
        total = math.sqrt(llm_norm**2 + float(encoder_sq))
        coeff = self.clip_grad / (total + 1.0e-6)
        if self.clip_grad > 0 and coeff < 1.0:
            # a ChainedOptimizer (dense + expert-parallel parameters) answers get_parameters() per part only
            parts = getattr(megatron_optimizer, "chained_optimizers", [megatron_optimizer])
            for param in (p for part in parts for p in part.get_parameters()):
                if param.grad is not None:
                    param.grad.mul_(coeff)  # aliases main_grad: the step's prepare_grads keeps it scaled
            for grad in grads:
                grad.mul_(coeff)
        return total

    def step(self, lr: float) -> None:
        if self.optimizer is None:
            return
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()

    def _encoders(self) -> nn.Module:
        """The sharded encoders alone: the optimizer-state helpers name parameters over this module."""
        return nn.ModuleDict({e: getattr(self.model, e) for e in self.names})

    def state_dict(self) -> dict:
        """Whole (unsharded) optimizer state on every rank, plain tensors: loads at any world size."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        if self.optimizer is None:
            return {}
        options = StateDictOptions(full_state_dict=True)
        return get_optimizer_state_dict(self._encoders(), self.optimizer, options=options)

    def load_state_dict(self, state: dict | None, where: str) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        if self.optimizer is None:
            return
        if not state:
            raise ValueError(f"{where} holds no encoder optimizer state for trained encoders {list(self.names)} "
                             "(saved by a stage that did not train them, or by an older version): resume is not "
                             "possible; initialise from it instead (init_from)")  # fmt: skip
        # not strict: a trained encoder's parameter that no loss reaches (the audio encoder's CTC head outside
        # the CTC stage) never got a gradient, so AdamW never made state for it, before the save as after
        options = StateDictOptions(full_state_dict=True, strict=False)
        set_optimizer_state_dict(self._encoders(), self.optimizer, state, options=options)
