"""One rank of `omnistage bench parallel` (components.bench.parallel_scaling starts it under torchrun).

Runs `run_stage` on one stage of a curriculum, reduced by components.training.parallel_compare.layout_stage
(every module but the codec trainable, the given tensor/expert/pipeline sizes; data parallel is what the
world size leaves), for a few steps, and writes RESULT.rankN.pt: per-step losses, tokens/s, step seconds and
FFN experts per token (ScMoE's zero-computation experts make compute depend on routing), the global
batches' sample keys, the packing efficiency and how run_stage parallelised the encoders. With `--grads`
the step-1 gradients go to RESULT.grads/ (a checkpoint whose weights are gradients, see parallel_compare);
with `--save-init DIR` (one process) the freshly built model is first written to DIR, and `--init DIR`
starts from it, so every layout starts from the same weights.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--curriculum", type=Path, required=True)
    parser.add_argument("--stage", required=True)
    parser.add_argument("--preset", required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--seq-length", type=int, required=True)
    parser.add_argument("--global-batch", type=int, default=2)
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--pp", type=int, default=1)
    parser.add_argument("--ep", type=int, default=1)
    parser.add_argument("--mixture", type=json.loads, help="replace the stage's mixture (JSON object)")
    parser.add_argument("--init", type=Path, help="checkpoint to start from")
    parser.add_argument("--save-init", action="store_true", help="write --init first (one process)")
    parser.add_argument("--grads", action="store_true", help="save the step-1 gradients to RESULT.grads/")
    args = parser.parse_args()

    from components.specs.curriculum import CurriculumSpec
    from components.training.parallel_compare import build_stage_model, layout_stage, save_gradients, save_model
    from components.training.stage_runner import StageRun, run_stage
    from model.distributed import ParallelSizes, init_parallel

    sizes = ParallelSizes(tensor=args.tp, pipeline=args.pp, expert=args.ep)
    curriculum, stage = layout_stage(CurriculumSpec.load(args.curriculum), args.stage, sizes,
                                     seq_length=args.seq_length, global_batch_size=args.global_batch,
                                     micro_batch_size=args.micro_batch, mixture=args.mixture,
                                     preset=args.preset)  # fmt: skip
    if args.save_init:  # the initialisation order of run_stage: the same weights as its own fresh start
        init_parallel(sizes, seed=curriculum.seed)
        torch.manual_seed(curriculum.seed)
        save_model(args.init, build_stage_model(curriculum, stage, args.tokenizer), curriculum.preset, args.tokenizer)
    grads: dict[str, torch.Tensor] = {}

    def keep_first_grads(step: int, named: dict[str, torch.Tensor]) -> None:
        if step == 1:
            grads.update(named)

    run = StageRun(curriculum, stage.name, {name: args.dataset for name in stage.data.datasets}, args.tokenizer,
                   args.out, init_from=args.init, max_steps=args.steps, checkpoint_every=args.steps,
                   inspect_grads=keep_first_grads if args.grads else None)  # fmt: skip
    result = run_stage(run)
    history = result.history
    tokens = [h["tokens"] - (history[i - 1]["tokens"] if i else 0) for i, h in enumerate(history)]  # per step
    record = {"losses": [h["loss"] for h in history], "tokens_per_s": [h["tokens_per_s"] for h in history],
              "step_s": [n / h["tokens_per_s"] for n, h in zip(tokens, history)],
              "positions_per_step": stage.global_batch_size * stage.seq_length,
              "ffn_experts_per_token": [h["ffn_experts_per_token"] for h in history], "order": result.data_order,
              "packing_efficiency": result.packing_efficiency, "encoder_parallel": result.encoder_parallel,
              "world": torch.distributed.get_world_size()}  # fmt: skip
    if args.grads:
        holder = build_stage_model(curriculum, stage, args.tokenizer)  # same layout: same names and shards
        save_gradients(Path(f"{args.result}.grads"), holder, grads, curriculum.preset, args.tokenizer)
    torch.save(record, f"{args.result}.rank{torch.distributed.get_rank()}.pt")


if __name__ == "__main__":
    main()
