"""The local submitter of a multi-process stage: run, on this machine, the node command a TrainJob's nodes
run on a cluster (trainjob.node_command), so kfp.local trains such a stage through the same entry point.

    run_node_locally(node_command(curriculum, stage, inputs, out), stage, where="curriculum.yaml")

`omnistage train ... --nproc-per-node N` re-launches itself under torchrun `--standalone` (one machine,
gloo on CPU); only the submitter differs from the cluster, where Trainer starts the same command on every
node with the rendezvous in PET_* variables. The command's `omnistage` becomes this interpreter's
`-m components.cli`, so the run uses the environment kfp.local runs in, whatever is on PATH.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from components.specs.curriculum import StageSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger(__name__)


class LocalStageFailed(RuntimeError):
    """The stage's processes exited with an error; their log went to this task's output."""


def local_command(node_command: list[str]) -> list[str]:
    """The node command as this interpreter runs it."""
    if node_command[:2] != ["omnistage", "train"]:
        raise ValueError(f"not a stage node command: {node_command[:2]}")
    return [sys.executable, "-m", "components.cli", *node_command[1:]]


def check_runs_here(stage: StageSpec, where: str) -> None:
    """Refuse a stage on several nodes: one machine cannot stand in for its nodes (and their GPUs)."""
    if stage.resources.nodes > 1:
        raise ValueError(f"{where}: stage '{stage.name}' asks for resources.nodes {stage.resources.nodes}; a local "
                         "run (kfp.local, `omnistage pipeline run-local`) has one machine: set nodes to 1 (and "
                         "processes_per_node for several local processes) or compile the pipeline for a "
                         "cluster")  # fmt: skip


def run_node_locally(node_command: list[str], stage: StageSpec, where: str) -> None:
    """Run the node command here and wait; LocalStageFailed when it fails (check_runs_here first)."""
    check_runs_here(stage, where)
    res = stage.resources
    command = local_command(node_command)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    log.info("stage %s: %d process(es) on this machine: %s", stage.name, res.processes(), " ".join(command))
    child = subprocess.Popen(command, env=env, cwd=REPO_ROOT)
    try:
        code = child.wait()
    except BaseException:  # the task is cancelled or interrupted: its processes go with it
        child.terminate()
        child.wait(timeout=30)
        raise
    if code:
        raise LocalStageFailed(f"stage '{stage.name}': {' '.join(command)} exited with {code} (its log is above)")
