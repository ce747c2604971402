"""Run by test_encoder_parallel.py: the tiny omni model's encoder gradients with FSDP2-sharded encoders and
the ModalityBridge (under torchrun, 2 gloo ranks) and, on the same ranks, an unsharded copy of the model
(the one-process reference).

Two layouts, both at 2 ranks with the encoders sharded over both:
- `shared`: both ranks hold batch A (as tensor/context-parallel ranks do); the bridge splits A's images
  and clips between them, gathers the features, and each rank's loss covers its half of the sequence
  (`split_sequence`); reference: the loss over the whole sequence.
- `dp`: rank r holds batch r (data parallel, a bridge of one rank); rank 1's batch has no audio, so its
  audio encoder runs on the probe; reference: the sum of both batches' losses.
Also measured (2 ranks): the bridge's temporary memory at 1 and 4 chunks. Writes RESULT.rankN.pt.
"""

from __future__ import annotations

import argparse

import torch

VISION_PAD, AUDIO_PAD, SEQ = 5, 8, 24


def batches():
    from model.omni import OmniBatch
    from model.vit import VisualInput

    g = torch.Generator().manual_seed(7)
    visuals = [VisualInput(torch.randn(3, 28, 28, generator=g)), VisualInput(torch.randn(3, 28, 56, generator=g)),
               VisualInput(torch.randn(4, 3, 28, 28, generator=g))]  # 2 + 4 + 4 feature rows
    clip = torch.randn(5, 640, generator=g)  # 5 audio steps

    def ids(*runs):
        out = torch.randint(20, 100, (SEQ,), generator=g)
        at = 0
        for skip, pad, count in runs:
            out[at + skip : at + skip + count] = pad
            at += skip + count
        return out[None]

    a = OmniBatch(ids((3, VISION_PAD, 10), (2, AUDIO_PAD, 5)), torch.zeros(1, SEQ, dtype=torch.long),
                  visuals=visuals, audio_features=[clip])  # fmt: skip
    b = OmniBatch(ids((3, VISION_PAD, 2)), torch.zeros(1, SEQ, dtype=torch.long), visuals=[visuals[0]])
    return a, b


def weights(hidden: int) -> torch.Tensor:
    return torch.randn(SEQ, 1, hidden, generator=torch.Generator().manual_seed(11))


def encoder_grads(model) -> dict[str, torch.Tensor]:
    grads = {}
    for name, param in [*model.vit.named_parameters("vit"), *model.audio_encoder.named_parameters("audio_encoder")]:
        if param.grad is not None:
            grad = param.grad.full_tensor() if hasattr(param.grad, "full_tensor") else param.grad
            grads[name] = grad.detach().clone()
    model.zero_grad(set_to_none=True)
    return grads


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--result", required=True)
    parser.add_argument("--num-chunks", type=int, default=3)
    args = parser.parse_args()

    import torch.distributed as dist

    from model.config import get_preset
    from model.distributed import init_parallel
    from model.encoder_parallel import EncoderParallelConfig, encoder_mesh, hybrid_group_mesh, shard_encoders
    from model.modality_bridge import ModalityBridge
    from model.omni import OmniModel

    init_parallel(seed=1234)
    torch.manual_seed(0)
    model = OmniModel(get_preset("tiny"), VISION_PAD, AUDIO_PAD)
    w = weights(model.preset.llm.hidden_size)
    a, b = batches()
    world, rank = dist.get_world_size(), dist.get_rank()
    result: dict = {"names": sorted(n for n, _ in [*model.vit.named_parameters("vit"),
                                                    *model.audio_encoder.named_parameters("audio_encoder")])}
    # The reference: an unsharded copy (the same initial weights) computing both layouts in one process.
    reference = OmniModel(get_preset("tiny"), VISION_PAD, AUDIO_PAD)  # (a megatron model cannot be deep-copied)
    for name in ("vit", "audio_encoder", "audio_embeddings"):
        getattr(reference, name).load_state_dict(getattr(model, name).state_dict())
    (reference.embed(a) * w).sum().backward()
    result["reference_shared"] = encoder_grads(reference)
    ((reference.embed(a) * w).sum() + (reference.embed(b) * w).sum()).backward()
    result["reference_dp"] = encoder_grads(reference)
    if world > 1:
        everyone = ModalityBridge(dist.group.WORLD, num_chunks=args.num_chunks)
        alone = [dist.new_group([r]) for r in range(world)][rank]  # every rank takes part in each new_group
        shard_encoders(model, encoder_mesh(EncoderParallelConfig()), EncoderParallelConfig(), everyone)
        result["sharded_names"] = sorted(n for n, _ in [*model.vit.named_parameters("vit"),
                                                        *model.audio_encoder.named_parameters("audio_encoder")])
        (everyone.split_sequence(model.embed(a)) * everyone.split_sequence(w)).sum().backward()
        result["shared"] = encoder_grads(model)
        model.encoder_bridge = ModalityBridge(alone)
        (model.embed([a, b][rank]) * w).sum().backward()
        result["dp"] = encoder_grads(model)
        result["memory"] = bridge_memory(world)
        # HSDP over a mesh built from an existing group (the trainer's path): shard_size 1 at 2 ranks is
        # (2 replicas x 1 shard), so the gradient sum crosses the replicate dimension alone
        hsdp = OmniModel(get_preset("tiny"), VISION_PAD, AUDIO_PAD)
        for name in ("vit", "audio_encoder", "audio_embeddings"):
            getattr(hsdp, name).load_state_dict(getattr(reference, name).state_dict())
        config = EncoderParallelConfig(shard_size=1)
        mesh = hybrid_group_mesh(dist.group.WORLD, config)
        result["hsdp_mesh"] = (mesh.mesh_dim_names, tuple(mesh.shape))
        shard_encoders(hsdp, mesh, config, ModalityBridge(alone))
        (hsdp.embed([a, b][rank]) * w).sum().backward()
        result["hsdp"] = encoder_grads(hsdp)
    torch.save(result, f"{args.result}.rank{rank}.pt")


def bridge_memory(world: int) -> dict[int, dict[str, int]]:
    """Bytes the bridge allocates gathering 4096 x 256 fp32 rows per rank (and the split's backward)."""
    import torch.distributed as dist

    from components.bench.tensor_memory import TensorMemory
    from model.modality_bridge import ModalityBridge

    local = torch.randn(4096, 256, requires_grad=True)
    out = {}
    for chunks in (1, 4):
        bridge = ModalityBridge(dist.group.WORLD, num_chunks=chunks)
        with TensorMemory() as forward:
            full = bridge.gather(local)
        gathered = full.numel() * full.element_size()
        with TensorMemory() as backward:
            bridge.split_sequence(full.detach().requires_grad_()).sum().backward()
        out[chunks] = {"gathered": gathered, "forward_peak": forward.peak_bytes,
                       "backward_peak": backward.peak_bytes}  # fmt: skip
    return out


if __name__ == "__main__":
    main()
