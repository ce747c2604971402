"""What a KFP stage component runs: parse its string parameters and call the tracked stage runner, or, for a
stage of several processes, start its node command through a submitter (a TrainJob on a cluster, torchrun
here under kfp.local) and wait for it.

Both write the stage's checkpoint location into the output artifact the same way (write_checkpoint_pointer),
and the next stage reads it back with follow_pointer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from components.object_storage import is_remote
from components.specs.curriculum import CHECKPOINT_URI_ENV, CurriculumSpec

if TYPE_CHECKING:
    from components.pipelines.trainjob_launcher import LaunchSettings

POINTER = "checkpoint.uri"
log = logging.getLogger(__name__)


def follow_pointer(artifact: Path) -> str:
    """The checkpoint location an artifact stands for: itself, or where its pointer file says (a folder on the
    PVC, or the object-store URI the checkpoint was published to)."""
    pointer = Path(artifact) / POINTER
    return pointer.read_text().strip() if pointer.is_file() else str(artifact)


def stage_checkpoint_location(curriculum: str, stage: str, artifact: Path) -> tuple[Path, str | None]:
    """(local output folder, object-store URI or None) of a stage task writing its output artifact `artifact`.

    - a checkpoint prefix (`cluster.checkpoint_uri` or `$OMNISTAGE_CHECKPOINT_URI`, an `s3://`/`gs://` one;
      checkpoint_uri_root): the checkpoint is published to
      ROOT/CURRICULUM/RUN_KEY/STAGE/checkpoint (components.training.checkpoint_store) and staged locally on the
      PVC when one is mounted, else under `$OMNISTAGE_STAGING_DIR` (default the system temp folder): never
      in the artifact folder, which KFP would upload as a second copy;
    - `OMNISTAGE_CHECKPOINT_ROOT` alone (a PVC): written there;
    - neither: into the artifact folder itself.
    RUN_KEY is unique per task run (a hash of the artifact path).
    """
    import tempfile

    from components.training.checkpoint_store import stage_checkpoint_uri

    artifact = Path(artifact)
    spec = CurriculumSpec.load(curriculum)
    volume, uri_root = os.environ.get("OMNISTAGE_CHECKPOINT_ROOT"), checkpoint_uri_root(spec)
    if not volume and not uri_root:
        return artifact, None
    run_key = hashlib.sha256(str(artifact.resolve()).encode()).hexdigest()[:16]
    staging = volume or str(Path(os.environ.get("OMNISTAGE_STAGING_DIR") or tempfile.gettempdir()) / "omnistage-ckpt")
    uri = stage_checkpoint_uri(uri_root, spec.name, run_key, stage) if uri_root else None
    return Path(staging) / spec.name / run_key / stage, uri


def curriculum_or_env(value: str | None, env_name: str, field: str) -> str | None:
    """The one precedence rule of the object-storage settings: the curriculum's `cluster.FIELD` when it sets
    one, else the environment variable. The compiled pipeline sets the variable from the curriculum on every
    pod, so both agree there; elsewhere (a shell running `omnistage pipeline trainjob`) a differing variable
    is ignored, with a warning, so the printed TrainJob is the one the cluster's launcher creates."""
    env_value = os.environ.get(env_name) or None
    if value and env_value and env_value != value:
        log.warning("%s=%s ignored: the curriculum's cluster.%s is %s", env_name, env_value, field, value)
    return value or env_value


def checkpoint_uri_root(curriculum: CurriculumSpec | None = None) -> str | None:
    """The object-store prefix stage checkpoints are published under: the curriculum's `cluster.checkpoint_uri`,
    else `$OMNISTAGE_CHECKPOINT_URI` (curriculum_or_env); None when neither is set. An environment value that
    is not an object-store URI is refused (a shared volume is `OMNISTAGE_CHECKPOINT_ROOT`)."""
    root = curriculum_or_env(curriculum.cluster.checkpoint_uri if curriculum else None, CHECKPOINT_URI_ENV,
                             "checkpoint_uri")  # fmt: skip
    if root is not None and not is_remote(root):
        raise ValueError(f"{CHECKPOINT_URI_ENV}={root!r} is not an object-store URI (s3://, gs://): for a "
                         "shared volume set OMNISTAGE_CHECKPOINT_ROOT instead")  # fmt: skip
    return root


def write_checkpoint_pointer(artifact: Path | str, checkpoint: str) -> None:
    """Make the output artifact stand for a checkpoint written elsewhere (the shared volume, object storage)."""
    Path(artifact).mkdir(parents=True, exist_ok=True)
    (Path(artifact) / POINTER).write_text(checkpoint)


def run_stage_step(curriculum: str, stage: str, datasets: str, tokenizer: str, tracking_uri: str,
                   parent_run_id: str, max_steps: int, out: str, init_from: str | None = None) -> dict:  # fmt: skip
    """`datasets` is JSON {name: folder or NAME@VERSION}; `tokenizer` a path or URI; `max_steps` 0 means the
    stage's own budget. Versions and URIs are made local first (components.versioning.dataset_cache).

    When the checkpoint goes elsewhere than the artifact folder (see `stage_checkpoint_location`), the output
    artifact holds a pointer file (`checkpoint.uri`) with its folder or URI, which the next stage follows.
    """
    # Imported here: torch and MLflow are heavy, and the multi-node launcher below needs neither.
    from components.tracking.mlflow_stage import tracked_stage
    from components.training.stage_runner import StageRun
    from components.versioning.dataset_cache import local_dataset, local_input_file

    artifact = Path(out)
    local_out, checkpoint_uri = stage_checkpoint_location(curriculum, stage, artifact)
    run = StageRun(
        CurriculumSpec.load(curriculum),
        stage,
        {name: local_dataset(location) for name, location in json.loads(datasets).items()},
        local_input_file(tokenizer),
        local_out,
        init_from=follow_pointer(Path(init_from)) if init_from else None,
        max_steps=max_steps or None,
        checkpoint_uri=checkpoint_uri,
    )
    result, run_id = tracked_stage(run, tracking_uri, None if parent_run_id == "offline" else parent_run_id)
    if local_out != artifact:
        write_checkpoint_pointer(artifact, checkpoint_uri or str(local_out.resolve()))
    return {"stage": result.stage, "steps": result.steps, "final_loss": result.final_loss, "run_id": run_id}


SUBMITTERS = ("trainjob", "local")
"""How a multi-process stage's processes start: a Kubeflow Trainer TrainJob on the cluster (trainjob_launcher.py),
or torchrun on this machine (local_submitter.py, what `omnistage pipeline run-local` compiles in)."""


def launch_stage_step(curriculum: str, stage: str, run_name: str, datasets: str, tokenizer: str, tracking_uri: str,
                      max_steps: int, out: str, init_from: str | None = None,
                      settings: LaunchSettings | None = None, submitter: str = "trainjob",
                      parent_run_id: str = "") -> dict:  # fmt: skip
    """The task of a multi-process stage: start the node command (trainjob.node_command) through `submitter`,
    wait for it, and point the output artifact `out` at the checkpoint it wrote.

    - `trainjob`: create (or, on retry, re-attach to) the stage's TrainJob, print the rank-0 node's log until
      the job ends, fail with the job's reason; a cancelled task deletes the job.
    - `local`: run the same command here (torchrun, gloo on CPU); the checkpoint goes where a one-process
      stage's goes (run_stage_step).

    Both pass datasets and tokenizer as given: the node command's entry point (components/cli/train.py) makes
    `NAME@VERSION` and URIs local on each node. With a checkpoint prefix (checkpoint_uri_root) it is published
    under it and `out` points at that URI.
    """
    from components.pipelines.trainjob import StageInputs

    if submitter not in SUBMITTERS:
        raise ValueError(f"stage '{stage}': submitter {submitter!r} is not one of {list(SUBMITTERS)}")
    spec = CurriculumSpec.load(curriculum)
    parent = None if parent_run_id in ("", "offline") else parent_run_id
    previous = follow_pointer(Path(init_from)) if init_from else None
    if submitter == "local":
        return _run_here(curriculum, spec, stage, datasets, tokenizer, tracking_uri, parent, max_steps, out, previous)
    from components.pipelines.trainjob import build_trainjob, stage_checkpoint_dir, with_launcher_environment
    from components.pipelines.trainjob_launcher import LaunchSettings, launch_trainjob

    inputs = StageInputs(datasets=json.loads(datasets), tokenizer=tokenizer, init_from=previous,
                         tracking_uri=tracking_uri, max_steps=max_steps or None, parent_run_id=parent)  # fmt: skip
    inputs = with_launcher_environment(inputs, spec, stage, run_name)
    manifest = build_trainjob(spec, curriculum, stage, run_name, inputs)
    # The curriculum's admission limit applies whatever polling the caller chose.
    settings = dataclasses.replace(settings or LaunchSettings(), admission_timeout_s=spec.cluster.admission_timeout_s)
    result = launch_trainjob(manifest, settings)
    # The nodes stage the checkpoint on the volume (--out) and rank 0 publishes it to the URI when one is set.
    checkpoint = inputs.checkpoint_uri or stage_checkpoint_dir(spec, run_name, stage)
    write_checkpoint_pointer(out, checkpoint)
    log.info("stage %s: %s/%s complete; checkpoint %s", stage, result.namespace, result.name, checkpoint)
    return {"stage": stage, "trainjob": result.name, "namespace": result.namespace, "reattached": result.reattached,
            "checkpoint": checkpoint}  # fmt: skip


def _run_here(curriculum: str, spec: CurriculumSpec, stage: str, datasets: str, tokenizer: str, tracking_uri: str,
              parent_run_id: str | None, max_steps: int, out: str, init_from: str | None) -> dict:  # fmt: skip
    """The local submitter: the node command on this machine, its checkpoint where run_stage_step puts one."""
    from components.pipelines.local_submitter import run_node_locally
    from components.pipelines.trainjob import StageInputs, node_command

    artifact = Path(out)
    local_out, checkpoint_uri = stage_checkpoint_location(curriculum, stage, artifact)
    # Datasets and tokenizer go to the node command as given (folders, NAME@VERSION, URIs): the entry point
    # makes them local, as a TrainJob's nodes do.
    inputs = StageInputs(datasets=json.loads(datasets), tokenizer=tokenizer, init_from=init_from,
                         tracking_uri=tracking_uri or None, max_steps=max_steps or None, parent_run_id=parent_run_id,
                         checkpoint_uri=checkpoint_uri)  # fmt: skip
    stage_spec = spec.stage(stage)
    run_node_locally(node_command(str(Path(curriculum).resolve()), stage_spec, inputs, str(local_out)), stage_spec,
                     where=curriculum)  # fmt: skip
    checkpoint = checkpoint_uri or str(local_out.resolve())
    if local_out != artifact:
        write_checkpoint_pointer(artifact, checkpoint)
    return {"stage": stage, "processes": stage_spec.resources.processes(), "checkpoint": checkpoint}
