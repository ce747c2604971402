"""Run by test_data_parallel.py (under torchrun, or as one plain process): `run_stage` on stage0-text of the
tiny curriculum with a given global/micro batch size on DATASET (the text_dataset fixture), writing what
each rank saw to RESULT.rankN.pt.

Written: per-step losses, the global and this rank's sample keys per step, the gradients of every trainable
parameter after the data-parallel reduction (step 1), and the router biases at the end.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--global-batch", type=int, default=2)
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--tracking-uri", help="track with components.tracking.mlflow_stage (rank 0 only)")
    parser.add_argument("--plain-reference", action="store_true",
                        help="also compute step 1's gradients with plain torch autograd (no megatron)")  # fmt: skip
    args = parser.parse_args()

    from components.specs.curriculum import CurriculumSpec
    from components.training.stage_runner import StageRun, run_stage
    from tests.conftest import REPO_ROOT

    curriculum = CurriculumSpec.load(REPO_ROOT / "data_specs" / "curriculum" / "tiny.yaml")
    stage = curriculum.stage("stage0-text")
    stage = stage.model_copy(update={"global_batch_size": args.global_batch, "micro_batch_size": args.micro_batch})
    curriculum = curriculum.model_copy(update={"stages": [stage]})
    grads: dict[str, torch.Tensor] = {}

    def keep_first_grads(step: int, named: dict[str, torch.Tensor]) -> None:
        if step == 1:
            grads.update(named)

    run = StageRun(curriculum, "stage0-text", {"demo": args.dataset}, args.dataset / "tokenizer.json", args.out,
                   max_steps=args.steps, inspect_grads=keep_first_grads)  # fmt: skip
    if args.tracking_uri:
        from components.tracking.mlflow_stage import tracked_stage

        result, _ = tracked_stage(run, args.tracking_uri)
    else:
        result = run_stage(run)
    plain = plain_first_step_grads(curriculum, args.dataset) if args.plain_reference else {}
    rank = torch.distributed.get_rank()
    torch.save({"plain_grads": plain, "losses": [h["loss"] for h in result.history], "order": result.data_order,
                "local_order": result.local_order, "grads": grads, "biases": result.router_biases,
                "sequences": result.global_sequences, "steps": result.steps},
               f"{args.result}.rank{rank}.pt")  # fmt: skip


def plain_first_step_grads(curriculum, dataset: Path) -> dict[str, torch.Tensor]:
    """Step 1 independently of megatron's DDP/schedule: the same initial model and first global batch,
    the stage's objective as one plain autograd backward over the whole global batch."""
    from components.training.megatron_step import weighted_loss
    from components.training.mixture import MixtureSampler
    from components.training.packing import CarryOverPacker
    from components.training.stage_runner import apply_freezing, load_samples, make_microbatch
    from model import tokenizer as tok
    from model.config import get_preset
    from model.distributed import init_parallel
    from model.omni import OmniModel

    stage = curriculum.stage("stage0-text")
    preset = get_preset(curriculum.preset, llm={"rope_theta": stage.rope_theta, "seq_length": stage.seq_length})
    init_parallel(seed=curriculum.seed)  # the same initialisation order as run_stage
    torch.manual_seed(curriculum.seed)
    tokenizer = tok.load_tokenizer(dataset / "tokenizer.json")
    model = OmniModel(preset, tok.special_id(tokenizer, tok.VISION_PAD), tok.special_id(tokenizer, tok.AUDIO_PAD))
    apply_freezing(model, stage)
    samples, by_family, _ = load_samples({"demo": dataset}, stage, tokenizer, preset, curriculum.seed)
    sampler, packer = MixtureSampler(by_family, stage.data.mixture, curriculum.seed), CarryOverPacker(stage.seq_length)

    def draw():
        key = sampler.next()[1]
        while len(samples[key]) > stage.seq_length:
            key = sampler.next()[1]
        return key, len(samples[key])

    rows = [[samples[k] for k in packer.next(draw)] for _ in range(stage.global_batch_size)]
    weighted_loss(model(make_microbatch(rows)), stage.loss_weights).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


if __name__ == "__main__":
    main()
