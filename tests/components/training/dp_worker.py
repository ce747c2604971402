"""Run by test_data_parallel.py (under torchrun, or as one plain process): `run_stage` on stage0-text of the
tiny curriculum with a given global/micro batch size, writing what each rank saw to RESULT.rankN.pt.

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
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--tracking-uri", help="track with components.tracking.mlflow_stage (rank 0 only)")
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
                   resume=args.resume, max_steps=args.steps, checkpoint_every=args.checkpoint_every,
                   inspect_grads=keep_first_grads)  # fmt: skip
    if args.tracking_uri:
        from components.tracking.mlflow_stage import tracked_stage

        result, _ = tracked_stage(run, args.tracking_uri)
    else:
        result = run_stage(run)
    rank = torch.distributed.get_rank()
    torch.save({"losses": [h["loss"] for h in result.history], "order": result.data_order,
                "local_order": result.local_order, "grads": grads, "biases": result.router_biases,
                "sequences": result.global_sequences, "steps": result.steps},
               f"{args.result}.rank{rank}.pt")  # fmt: skip


if __name__ == "__main__":
    main()
