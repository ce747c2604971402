"""Run by torchrun from test_parallel.py: the tiny LLM under TP or EP on gloo.

`--mode save`: build with seed 1234, run forward+backward through megatron's schedule, write per-token
losses, logits and selected gradients (gathered to full size), and a dist_checkpointing checkpoint.
`--mode check`: build with another layout (e.g. TP1), load that checkpoint (resharding it), compute the
same things and write them too; the test compares the two files.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import torch.distributed as dist


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["save", "check"], required=True)
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--ep", type=int, default=1)
    parser.add_argument("--dispatcher", default="allgather")
    parser.add_argument("--dense", action="store_true", help="MLA + dense FFN layers only, no sequence parallel")
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from megatron.core import dist_checkpointing, parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    from model.config import get_preset
    from model.distributed import ParallelSizes, init_parallel
    from model.llm.model import build_llm

    sizes = ParallelSizes(tensor=args.tp, expert=args.ep)
    init_parallel(sizes, seed=1234)
    cfg = get_preset("tiny").llm
    if args.dense:
        model = build_dense_llm(cfg, sizes)
    else:
        model = build_llm(cfg, sizes, dispatcher=args.dispatcher)
    if args.mode == "check":
        state = dist_checkpointing.load(model.sharded_state_dict(), str(args.ckpt))
        model.load_state_dict(state)

    g = torch.Generator().manual_seed(7)
    batch, seq = 4, 16
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), generator=g)
    labels = torch.roll(ids, -1, dims=1)
    pos = torch.arange(seq)[None].expand(batch, -1)
    micro = 2
    chunks = [(ids[i : i + batch // micro], labels[i : i + batch // micro], pos[: batch // micro])
              for i in range(0, batch, batch // micro)]  # fmt: skip
    per_token: list[torch.Tensor] = []

    def forward_step(data_iterator, model_chunk):
        tokens, targets, positions = next(data_iterator)
        output = model_chunk(tokens, positions, attention_mask=None, labels=targets)

        def loss_func(output_tensor):
            per_token.append(output_tensor.detach().clone())
            loss = output_tensor.float().mean()
            return loss, {"loss": loss.detach()}

        return output, loss_func

    forward_backward = get_forward_backward_func()
    forward_backward(
        forward_step_func=forward_step,
        data_iterator=iter(chunks),
        model=[model],
        num_microbatches=micro,
        seq_length=seq,
        micro_batch_size=batch // micro,
        forward_only=False,
    )
    result: dict = {"per_token_loss": torch.cat(per_token)}
    grads = {}
    for name, param in model.named_parameters():
        first_layer = name.startswith("decoder.layers.0.")
        if name.endswith(("linear_kv_down_proj.weight", "linear_q_down_proj.weight")) and first_layer:
            grads[name] = gather_full(param.grad, args.tp)
    result["grads"] = grads
    with torch.no_grad():
        model.eval()
        logits = model(ids, pos, attention_mask=None)
        result["logits"] = gather_from_tensor_model_parallel_region(logits)
    rank = dist.get_rank()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(result, args.out / f"rank{rank}.pt")
    if args.mode == "save":
        args.ckpt.mkdir(parents=True, exist_ok=True)
        dist_checkpointing.save(model.sharded_state_dict(), str(args.ckpt))
    dist.barrier()
    parallel_state.destroy_model_parallel()
    dist.destroy_process_group()


def build_dense_llm(cfg, sizes):
    """The LLM without MoE branches and without sequence parallelism: the path where megatron's MLA
    drops the RoPE key's gradient across TP ranks unless model.llm.mla's fix is active."""
    from megatron.core.models.gpt import GPTModel
    from megatron.core.transformer.transformer_block import TransformerBlockSubmodules

    from model.llm.mla import register_mla_config
    from model.llm.model import transformer_config
    from model.llm.norms import RMSNorm
    from model.llm.spec import dense_layer_spec

    register_mla_config(cfg.kv_lora_rank, cfg.q_lora_rank, cfg.qk_rope_head_dim)
    config = transformer_config(cfg, sizes, sequence_parallel=False)
    block = TransformerBlockSubmodules(layer_specs=[dense_layer_spec()] * cfg.num_layers, layer_norm=RMSNorm)
    return GPTModel(config, block, vocab_size=cfg.vocab_size, max_sequence_length=cfg.seq_length,
                    share_embeddings_and_output_weights=False, position_embedding_type="none")  # fmt: skip


def gather_full(grad: torch.Tensor, tp: int) -> torch.Tensor:
    """Column-parallel weight gradients are split along dim 0 over TP ranks."""
    if tp == 1:
        return grad.clone()
    from megatron.core import parallel_state

    parts = [torch.empty_like(grad) for _ in range(tp)]
    dist.all_gather(parts, grad.contiguous(), group=parallel_state.get_tensor_model_parallel_group())
    return torch.cat(parts, dim=0)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
