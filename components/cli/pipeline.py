"""Pipeline commands: compile the curriculum for a KFP cluster, print a stage's TrainJob, run it locally,
retrain, and `run` (the main job)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer

from components.cli.common import (
    DEFAULT_CURRICULUM,
    DEFAULT_DATASETS,
    DEFAULT_GATE,
    DEFAULT_TRACKING_URI,
    REPO_ROOT,
    WORK,
    JsonOut,
    TrackingUri,
    console,
    fail,
    parse_datasets,
    stdout_to_stderr,
)
from components.specs.loading import SpecError

app = typer.Typer()
pipeline_app = typer.Typer(help="Kubeflow pipelines: compile, or run locally with kfp.local.", no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")

MaxSteps = typer.Option(help="Steps per stage (0: each stage's budget).")


@pipeline_app.command("compile")
def pipeline_compile(
    curriculum: Annotated[Path, typer.Option(help="Curriculum YAML.")],
    out: Annotated[Path, typer.Option(help="Where to write the compiled pipeline YAML.")],
    gate: Annotated[Path | None, typer.Option(help="Gate YAML: end with evaluate -> gate -> promote.")] = None,
) -> None:
    """Compile the curriculum pipeline (one GPU task per stage) for a Kubeflow Pipelines cluster."""
    from components.pipelines.curriculum_pipeline import compile_pipeline

    try:
        compile_pipeline(curriculum, out, gate)
    except SpecError as exc:
        fail(str(exc))
    console.print(f"compiled {curriculum} -> {out}")


@pipeline_app.command("trainjob")
def pipeline_trainjob(
    curriculum: Annotated[Path, typer.Option(help="Curriculum YAML.")],
    stage: Annotated[str, typer.Option(help="A stage of several processes (nodes x processes per node > 1).")],
    run_name: Annotated[str, typer.Option(help="Pipeline run; with the stage it names the job.")] = "manual",
    dataset: Annotated[
        list[str] | None,
        typer.Option(help="NAME=DSNAME@VERSION (or a folder in the image/volume), as the launcher task gets it; "
                          "default: folders on the checkpoint volume."),  # fmt: skip
    ] = None,
    tokenizer: Annotated[str | None, typer.Option(help="Tokenizer URI or path; default: on the volume.")] = None,
) -> None:
    """Print, as YAML, the Kubeflow Trainer TrainJob a multi-process stage's launcher creates. Object storage: the
    curriculum's cluster.checkpoint_uri / dvc_remote / s3_endpoint, each else this shell's
    OMNISTAGE_CHECKPOINT_URI / OMNISTAGE_DVC_REMOTE / AWS_ENDPOINT_URL (a differing variable is ignored)."""
    import dataclasses

    import yaml

    from components.cli.common import parse_dataset_locations
    from components.pipelines.stage_entry import checkpoint_uri_root
    from components.pipelines.trainjob import StageInputs, build_trainjob, with_launcher_environment
    from components.specs.curriculum import CurriculumSpec
    from components.training.checkpoint_store import stage_checkpoint_uri

    try:
        spec = CurriculumSpec.load(curriculum)
        build_trainjob(spec, curriculum, stage, run_name)  # refuses a stage that cannot be a TrainJob, with why
        inputs = StageInputs.on_checkpoint_volume(spec, spec.stage(stage), run_name)
        inputs = with_launcher_environment(inputs, spec, stage, run_name)
        overrides = {"datasets": parse_dataset_locations(dataset)} if dataset else {}
        overrides.update({"tokenizer": tokenizer} if tokenizer else {})
        previous = spec.stage(stage).init_from
        if (root := checkpoint_uri_root(spec)) and previous:  # a previous TrainJob stage published under the same run
            overrides["init_from"] = stage_checkpoint_uri(root, spec.name, run_name, previous)
        manifest = build_trainjob(spec, curriculum, stage, run_name, dataclasses.replace(inputs, **overrides))
    except ValueError as exc:  # SpecError and TrainJobError are ValueErrors
        fail(str(exc))
    print(yaml.safe_dump(manifest, sort_keys=False), end="")


@pipeline_app.command("run-local")
def pipeline_run_local(
    curriculum: Annotated[Path, typer.Option(help="Curriculum YAML.")],
    dataset: Annotated[list[str], typer.Option(help="NAME=DIR of an ingested dataset; repeat per dataset.")],
    tokenizer: Annotated[Path, typer.Option(help="tokenizer.json.")],
    root: Annotated[Path, typer.Option(help="Pipeline root for artifacts (checkpoints).")],
    tracking_uri: Annotated[str, TrackingUri] = DEFAULT_TRACKING_URI,
    max_steps: Annotated[int, MaxSteps] = 0,
    gate: Annotated[Path | None, typer.Option(help="Gate YAML: end with evaluate -> gate -> promote.")] = None,
) -> None:
    """Run the whole curriculum pipeline on this machine through kfp.local (SubprocessRunner)."""
    from components.pipelines.curriculum_pipeline import run_locally

    run_locally(curriculum, parse_datasets(dataset), tokenizer, tracking_uri, root, max_steps, gate)


@app.command()
def retrain(
    curriculum: Annotated[Path, typer.Option(help="Curriculum YAML.")] = DEFAULT_CURRICULUM,
    gate: Annotated[Path, typer.Option(help="Gate YAML.")] = DEFAULT_GATE,
    dataset: Annotated[list[str], typer.Option(help="NAME=DIR of the ingested datasets.")] = DEFAULT_DATASETS,
    tokenizer: Annotated[Path, typer.Option(help="tokenizer.json.")] = WORK / "tokenizer.json",
    root: Annotated[Path, typer.Option(help="Pipeline root (stage checkpoints).")] = WORK / "pipeline",
    tracking_uri: Annotated[str, TrackingUri] = DEFAULT_TRACKING_URI,
    max_steps: Annotated[int, MaxSteps] = 0,
    kfp_host: Annotated[str, typer.Option(help="KFP API endpoint; empty runs kfp.local here.")] = "",
    kfp_namespace: Annotated[str, typer.Option(help="KFP namespace (multi-user deployments).")] = "",
    dataset_version: Annotated[
        list[str] | None, typer.Option(help="NAME=VERSION: train this DVC version (checked against the folder).")
    ] = None,
    force: Annotated[bool, typer.Option("--force/--no-force", help="Retrain an already trained data version.")] = (
        False
    ),
    json_out: Annotated[bool, JsonOut] = False,
) -> None:
    """Curriculum pipeline -> evaluate -> gate -> promote for the current data, unless already trained.
    With --kfp-host: submitted to that KFP API once per training key and waited for (token from
    OMNISTAGE_KFP_TOKEN)."""
    from components.cli.pipeline_runs import parse_versions
    from components.orchestration.retrain import RetrainRequest
    from components.orchestration.retrain import retrain as run_retrain

    request = RetrainRequest(curriculum, gate, parse_datasets(dataset), tokenizer, tracking_uri, root, force,
                             max_steps, kfp_host or None, versions=parse_versions(dataset_version or []),
                             kfp_namespace=kfp_namespace or None)  # fmt: skip
    try:
        # kfp.local logs its tasks on stdout; with --json stdout must hold only the result (Airflow's XCom).
        with stdout_to_stderr() if json_out else contextlib.nullcontext():
            outcome = run_retrain(request)
    except (SpecError, ValueError, FileNotFoundError, RuntimeError) as exc:
        fail(str(exc))
    if json_out:
        print(json.dumps(outcome, indent=2))
    else:
        _print_run_summary(outcome, tracking_uri)


def _print_run_summary(outcome: dict, tracking_uri: str) -> None:
    if not outcome["trained"]:
        console.print(f"[yellow]training skipped[/yellow]: data {outcome['data_versions']} "
                      f"{outcome['skipped_because']} (--force to retrain)")  # fmt: skip
    else:
        console.print(f"trained curriculum run {outcome['curriculum_run']} on data {outcome['data_versions']}")
    decision, champion = outcome.get("last_decision") or {}, outcome.get("champion")
    if decision:
        colour = {"promoted": "green", "rejected": "red"}.get(decision["status"], "yellow")
        console.print(f"gate decision for v{decision['version']}: [{colour}]{decision['status']}[/{colour}]")
        for reason in decision.get("reasons", []):
            console.print(f"  - {reason}")
    if champion:
        console.print(f"champion: {champion['name']} v{champion['version']} (curriculum run {champion['run_id']}, "
                      f"data {champion['data_version']})")  # fmt: skip
        if champion.get("eval_run_id"):
            console.print(f"evaluation report: MLflow run {champion['eval_run_id']} -> artifacts/report/report.md")
    console.print(f"MLflow store: {tracking_uri}  (browse it: make ui)")


@app.command("run")
def run_all(
    size: Annotated[str, typer.Option(help="Demo corpus size: tiny | small | medium.")] = "small",
    workers: Annotated[int, typer.Option(help="Parallel workers for media work.")] = 2,
    max_steps: Annotated[int, MaxSteps] = 0,
    force: Annotated[bool, typer.Option("--force/--no-force", help="Retrain even if the data is unchanged.")] = (False),
) -> None:
    """The main job on the embedded stack: demo corpus -> ingest + DVC -> tokenizer -> curriculum pipeline
    (kfp.local) -> evaluate -> gate -> promote, then what happened and where to look."""
    import time

    from components.demo_data.corpus import write_demo_corpus
    from components.orchestration.retrain import RetrainRequest
    from components.orchestration.retrain import retrain as run_retrain
    from components.specs.dataset import DatasetSpec
    from components.training.tokenizer_corpus import build_tokenizer
    from components.versioning.dvc_dataset import DvcError, build_dataset

    started = time.monotonic()
    spec_path = REPO_ROOT / "data_specs/datasets/demo.yaml"
    corpus = write_demo_corpus(WORK / "raw" / "demo", seed=0, size=size, workers=workers)
    console.print(f"[bold]1/4 demo corpus[/bold]: {corpus['num_files']} files"
                  f"{' (reused)' if corpus.get('reused') else ''}")  # fmt: skip
    try:
        version = build_dataset(REPO_ROOT, DatasetSpec.load(spec_path), spec_path, WORK / "datasets" / "demo",
                                workers=workers)  # fmt: skip
    except (DvcError, SpecError, ValueError) as exc:
        fail(str(exc))
    info = version.as_dict()
    said = "ingested" if info.get("reproduced") else "unchanged: DVC skipped ingestion"
    console.print(f"[bold]2/4 dataset[/bold] demo version {info['version']} ({said})")
    tokenizer_path = WORK / "tokenizer.json"
    marker = WORK / "tokenizer.version"
    if not tokenizer_path.is_file() or not marker.is_file() or marker.read_text() != info["version"]:
        build_tokenizer(WORK / "datasets" / "demo", tokenizer_path, vocab_size=1024)
        marker.write_text(info["version"])
    console.print(f"[bold]3/4 tokenizer[/bold]: {tokenizer_path}")
    from components.specs.curriculum import CurriculumSpec

    stages = len(CurriculumSpec.load(DEFAULT_CURRICULUM).stages)
    console.print(f"[bold]4/4 curriculum[/bold] ({stages} stages through kfp.local) -> evaluate -> gate -> promote")
    request = RetrainRequest(DEFAULT_CURRICULUM, DEFAULT_GATE, {"demo": WORK / "datasets" / "demo"}, tokenizer_path,
                             DEFAULT_TRACKING_URI, WORK / "pipeline", force, max_steps)  # fmt: skip
    outcome = run_retrain(request)
    console.rule("what happened")
    _print_run_summary(outcome, DEFAULT_TRACKING_URI)
    console.print(f"dataset card: {WORK / 'datasets/demo/card/README.md'}")
    console.print(f"stage checkpoints: {WORK / 'pipeline'}")
    console.print(f"status any time: omnistage status    wall time: {time.monotonic() - started:.0f} s")
