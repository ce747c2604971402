"""Training commands: one curriculum stage on this machine, in one process or data parallel under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from components.cli.common import REPO_ROOT, fail, parse_dataset_locations
from model.pg_timeout import DEFAULT_PG_TIMEOUT_S, PG_TIMEOUT_ENV

app = typer.Typer()
NPROC_HELP = "Processes on this machine; > 1 re-launches this command under torchrun, data parallel (gloo on CPU)."


def local_inputs(locations: dict[str, str], tokenizer: str) -> tuple[dict[str, Path], Path]:
    """The stage's datasets and tokenizer as local paths: `NAME@VERSION` and URIs downloaded into the node's
    cache (components.versioning.dataset_cache), folders as given. Errors name the flag and the fix."""
    from components.versioning.dataset_cache import local_dataset, local_input_file

    try:
        folders = {name: local_dataset(location) for name, location in locations.items()}
        return folders, local_input_file(tokenizer)
    except (ValueError, FileNotFoundError) as exc:
        fail(f"--dataset/--tokenizer: {exc}")


def torchrun_command(nproc: int, stage_args: list[str], env: dict[str, str]) -> list[str]:
    """This command again under torchrun with `nproc` processes on this node.

    On one machine `--standalone` (a local rendezvous). On a cluster node started by Kubeflow Trainer the
    PET_* variables (PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR, ...) give torchrun the node count, rank and
    rendezvous, so they are left to it.
    """
    rendezvous = [] if any(k in env for k in ("PET_NNODES", "PET_MASTER_ADDR")) else ["--standalone"]
    return [sys.executable, "-m", "torch.distributed.run", *rendezvous, f"--nproc-per-node={nproc}",
            "-m", "components.cli", "train", *stage_args]  # fmt: skip


@app.command()
def train(
    curriculum: Annotated[Path, typer.Option(help="Curriculum YAML (data_specs/curriculum/*.yaml).")],
    stage: Annotated[str, typer.Option(help="Stage name in the curriculum.")],
    dataset: Annotated[
        list[str],
        typer.Option(help="NAME=DIR of an ingested dataset, or NAME=DSNAME@VERSION (a DVC version, restored from "
                          "$OMNISTAGE_DVC_REMOTE into the node's cache); repeat per dataset."),  # fmt: skip
    ],
    tokenizer: Annotated[str, typer.Option(help="tokenizer.json (omnistage tokenizer): a path or s3://, gs:// URI.")],
    out: Annotated[Path, typer.Option(help="Stage output folder (its checkpoint goes here).")],
    init_from: Annotated[
        str | None, typer.Option(help="Previous stage's checkpoint (weights only): a folder or an s3://, gs:// URI.")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Resume this stage from its own checkpoint in --out.")] = False,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps (smoke runs).")] = None,
    checkpoint_uri: Annotated[
        str | None,
        typer.Option(help="Also publish each checkpoint to this s3:// or gs:// URI (--resume restores from it)."),
    ] = None,
    nproc_per_node: Annotated[int, typer.Option(min=1, help=NPROC_HELP)] = 1,
    tracking_uri: Annotated[
        str | None, typer.Option(help="Track the stage in MLflow here (rank 0 only); without it nothing is tracked.")
    ] = None,
    parent_run_id: Annotated[
        str | None, typer.Option(help="MLflow run of the curriculum run: the stage's run becomes its child.")
    ] = None,
    checkpoint_every: Annotated[int, typer.Option(min=1, help="Save a checkpoint every this many steps.")] = 10,
    sample_log: Annotated[
        Path | None, typer.Option(help="Append each step's global batch (sample keys, JSON lines) here; rank 0.")
    ] = None,
    pg_timeout: Annotated[
        float | None,
        typer.Option(help=f"Seconds a collective waits for the other ranks before failing (sets ${PG_TIMEOUT_ENV}; "
                          f"default {DEFAULT_PG_TIMEOUT_S:g})."),  # fmt: skip
    ] = None,
) -> None:
    """Train one curriculum stage (see components/training/stage_runner.py).

    Under torchrun (this command with --nproc-per-node, or a cluster launcher starting it on every node)
    each process is one rank; only rank 0 prints the result. When a rank dies, torchrun stops the others
    and this command exits non-zero (torchrun's "Root Cause" names the rank); `--resume` continues from the
    last checkpoint.
    """
    if pg_timeout is not None:
        if not pg_timeout > 0:
            fail(f"--pg-timeout {pg_timeout:g}: expected seconds > 0")
        os.environ[PG_TIMEOUT_ENV] = f"{pg_timeout:g}"  # read by model.distributed here and in the ranks
    if nproc_per_node > 1 and "RANK" not in os.environ:
        # Inputs by version or URI are fetched here, once per node, before torchrun starts the ranks: they get
        # local paths and never download concurrently (the cache's file lock covers other launchers).
        folders, local_tokenizer = local_inputs(parse_dataset_locations(dataset), tokenizer)
        args = ["--curriculum", str(curriculum), "--stage", stage, "--tokenizer", str(local_tokenizer),
                "--out", str(out)]  # fmt: skip
        args += [a for name, folder in folders.items() for a in ("--dataset", f"{name}={folder}")]
        args += ["--init-from", str(init_from)] if init_from else []
        args += ["--resume"] if resume else []
        args += ["--max-steps", str(max_steps)] if max_steps is not None else []
        args += ["--checkpoint-uri", checkpoint_uri] if checkpoint_uri else []
        args += ["--tracking-uri", tracking_uri] if tracking_uri else []
        args += ["--parent-run-id", parent_run_id] if parent_run_id else []
        args += ["--checkpoint-every", str(checkpoint_every)]
        args += ["--sample-log", str(sample_log)] if sample_log else []
        # One thread per rank: N ranks x all cores each oversubscribes the machine (ENVIRONMENT.md).
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        code = subprocess.run(torchrun_command(nproc_per_node, args, env), env=env).returncode
        if code:
            print(f"omnistage train: stage '{stage}' failed under torchrun (exit {code}); its report above names "
                  f"the rank that failed first. Rerun with --resume to continue from the last checkpoint in {out}",
                  file=sys.stderr)  # fmt: skip
        raise typer.Exit(code=code)

    from components.specs.curriculum import CurriculumSpec
    from components.specs.loading import SpecError
    from components.training.stage_runner import StageRun, run_stage

    if parent_run_id and not tracking_uri:
        fail("--parent-run-id needs --tracking-uri (the MLflow server the parent run is on)")
    datasets, local_tokenizer = local_inputs(parse_dataset_locations(dataset), tokenizer)
    try:
        spec = CurriculumSpec.load(curriculum)
        run = StageRun(spec, stage, datasets, local_tokenizer, out, init_from, resume, max_steps,
                       checkpoint_every=checkpoint_every, checkpoint_uri=checkpoint_uri,
                       sample_log=sample_log)  # fmt: skip
        if tracking_uri:  # the KFP stage components' tracking: under torchrun, rank 0 only
            from components.tracking.mlflow_stage import tracked_stage

            result, _ = tracked_stage(run, tracking_uri, parent_run_id)
        else:
            result = run_stage(run)
    except (SpecError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps({"stage": result.stage, "steps": result.steps, "final_loss": result.final_loss,
                          "checkpoint": str(result.checkpoint), "checkpoint_uri": result.checkpoint_uri,
                          "packing_efficiency": result.packing_efficiency,
                          "skipped_too_long": result.skipped_too_long, "global_sequences": result.global_sequences},
                         indent=2))  # fmt: skip
