"""Run by test_model_parallel.py (under torchrun, or as one plain process): `run_stage` on a multimodal stage
of the tiny curriculum (the sft mixture: video, audio-visual, voice QA, captions, ASR) with every module
trainable and a given tensor/expert/pipeline layout.

`--save-init DIR` (one process): first write the freshly built model as a checkpoint in DIR; every run then
starts from that checkpoint (`init_from`), so all layouts start from the same weights even though their
random initialisation differs (each EP rank builds only its experts, each PP stage only its layers).

Written to RESULT.rankN.pt: per-step losses, the global and local sample keys per step, the router biases at
the end, the largest difference of each replicated gradient across the ranks of a pipeline stage, and where
the step-1 gradients went: RESULT.grads/, a checkpoint whose weights are the step-1 gradients (sharded like
the weights, so loading it into a one-process model gives the full gradients by name), and RESULT.audio_grads/,
the same for one step on a batch with audio codes and targets (see `audio_step_grads`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

STAGE = "sft"


def stage_curriculum(args):
    from components.specs.curriculum import CurriculumSpec
    from components.training.parallel_compare import layout_stage
    from model.distributed import ParallelSizes
    from tests.conftest import REPO_ROOT

    curriculum = CurriculumSpec.load(REPO_ROOT / "data_specs" / "curriculum" / "tiny.yaml")
    sizes = ParallelSizes(tensor=args.tp, pipeline=args.pp, expert=args.ep, context=getattr(args, "cp", 1))
    return layout_stage(curriculum, STAGE, sizes, seq_length=args.seq_length)


def audio_step_grads(curriculum, stage, tokenizer_path: Path, init: Path) -> tuple[dict, object]:
    """One `train_step` from the initial weights on a global batch with audio codes and codebook targets.

    The stage's data carries no audio codes yet, so the audio embeddings and heads get no gradient from
    `run_stage`; this step gives them one, on the same megatron machinery and layout. The batch is random
    text with random codes on a span of positions (test data, the same on every layout): 2 sequences,
    split over data parallel like a stage's global batch. Returns (this rank's named gradients, model).
    """
    from components.training.checkpoint import load_weights
    from components.training.data_parallel import launch_world, plan_data_parallel
    from components.training.megatron_step import build_optimizer, train_step, wrap_model
    from components.training.parallel_compare import build_stage_model
    from components.training.stage_runner import apply_freezing
    from model.distributed import training_device
    from model.omni import IGNORE, OmniBatch, offset_audio_codes

    model = build_stage_model(curriculum, stage, tokenizer_path).to(training_device())
    load_weights(init, model, curriculum.preset)
    apply_freezing(model, stage)
    ddp = wrap_model(model)
    optimizer, scheduler = build_optimizer(ddp, stage, 10)
    g = torch.Generator().manual_seed(5)
    rows = []
    for _ in range(stage.global_batch_size):
        ids = torch.randint(4, 300, (1, stage.seq_length), generator=g)
        ids[ids == model.vision_pad_id] = 4
        ids[ids == model.audio_pad_id] = 4
        codes = torch.full((1, stage.seq_length, 4), -1)
        span = slice(16, 16 + stage.seq_length // 4)
        for book, size in enumerate(model.preset.codec.codebook_sizes):
            codes[0, span, book] = torch.randint(0, size, (stage.seq_length // 4,), generator=g)
        codes = offset_audio_codes(codes)
        targets = torch.roll(codes, -1, dims=1)
        targets[targets < 0] = IGNORE
        rows.append(OmniBatch(ids, torch.roll(ids, -1, dims=1), audio_codes=codes, audio_labels=targets,
                              document_ids=torch.zeros_like(ids)))  # fmt: skip
    plan = plan_data_parallel(stage, *launch_world())
    mine = [batches[0] for batches in plan.local_microbatches(rows)]
    grads: dict[str, torch.Tensor] = {}
    train_step(ddp, optimizer, scheduler, mine, {"text": 1.0, "audio": 0.25}, grads.update)
    return grads, model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--init", type=Path, required=True, help="checkpoint every run starts from")
    parser.add_argument("--save-init", action="store_true", help="write --init first (one process)")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--pp", type=int, default=1)
    parser.add_argument("--ep", type=int, default=1)
    parser.add_argument("--cp", type=int, default=1)
    parser.add_argument("--seq-length", type=int, default=512)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()

    from components.training.parallel_compare import build_stage_model, replica_grad_diff, save_gradients, save_model
    from components.training.stage_runner import StageRun, run_stage
    from model.distributed import init_parallel, training_device

    curriculum, stage = stage_curriculum(args)
    tokenizer = args.dataset / "tokenizer.json"
    if args.save_init:
        init_parallel(stage.parallel.megatron_sizes(), seed=curriculum.seed)
        torch.manual_seed(curriculum.seed)
        save_model(args.init, build_stage_model(curriculum, stage, tokenizer), curriculum.preset, tokenizer)
    grads: dict[str, torch.Tensor] = {}

    def keep_first_grads(step: int, named: dict[str, torch.Tensor]) -> None:
        if step == 1:
            grads.update(named)

    run = StageRun(curriculum, STAGE, {"demo": args.dataset}, tokenizer, args.out, init_from=args.init,
                   resume=args.resume, max_steps=args.steps, checkpoint_every=args.checkpoint_every,
                   inspect_grads=keep_first_grads)  # fmt: skip
    result = run_stage(run)
    record = {"losses": [h["loss"] for h in result.history], "history": result.history, "order": result.data_order,
              "local_order": result.local_order, "biases": result.router_biases, "sequences": result.global_sequences,
              "steps": result.steps, "tokens_per_s": [h["tokens_per_s"] for h in result.history],
              "encoder_parallel": result.encoder_parallel}  # fmt: skip
    if grads:
        # same layout: same parameter names and shards
        holder = build_stage_model(curriculum, stage, tokenizer).to(training_device())
        record["replica_grad_diff"] = replica_grad_diff(holder, grads)
        layers = holder.llm.decoder.layers
        record["dense_layer_numbers"] = [dense.layer_number for layer in layers for dense in layer.dense_layers]
        save_gradients(Path(f"{args.result}.grads"), holder, grads, curriculum.preset, tokenizer)
        audio_grads, audio_model = audio_step_grads(curriculum, stage, tokenizer, args.init)
        save_gradients(Path(f"{args.result}.audio_grads"), audio_model, audio_grads, curriculum.preset, tokenizer)
    torch.save(record, f"{args.result}.rank{torch.distributed.get_rank()}.pt")


if __name__ == "__main__":
    main()
