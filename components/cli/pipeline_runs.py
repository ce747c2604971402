"""Pipeline runs on a Kubeflow Pipelines cluster: `omnistage pipeline submit | status | cancel | finish`.

The `retrain_omni` DAG calls these through the runner (the kfp SDK is not in Airflow's venv): `submit`
returns the run for the training key (an existing live or succeeded one, or a new submission), a
reschedule-mode sensor polls `status`, the sensor's failure callback calls `cancel`, and `finish` marks
the curriculum run completed in MLflow and reports the gate decision. The API token comes from the
environment variable OMNISTAGE_KFP_TOKEN (never a flag: command lines are visible to every process).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from components.cli.common import (
    DEFAULT_CURRICULUM,
    DEFAULT_DATASETS,
    DEFAULT_GATE,
    DEFAULT_TRACKING_URI,
    WORK,
    TrackingUri,
    fail,
    parse_datasets,
    stdout_to_stderr,
)
from components.cli.pipeline import MaxSteps, pipeline_app
from components.specs.loading import SpecError

app = typer.Typer()  # the commands live under `omnistage pipeline`

KfpHost = typer.Option("--kfp-host", help="KFP API endpoint, http(s)://HOST[:PORT].")
KfpNamespace = typer.Option("--kfp-namespace", help="KFP namespace (multi-user deployments); empty: the default.")
DatasetVersions = typer.Option("--dataset-version", help="NAME=VERSION pinning a dataset's DVC version; repeat.")


def parse_versions(items: list[str]) -> dict[str, str]:
    """`NAME=VERSION` options -> {name: version}."""
    out = {}
    for item in items:
        name, sep, version = item.partition("=")
        if not sep or not name or not version:
            fail(f"--dataset-version takes NAME=VERSION (e.g. demo=3f2a...c1.dir), got {item!r}")
        out[name] = version
    return out


def parse_locations(items: list[str]) -> dict[str, Path | str]:
    """`NAME=DIR` or `NAME=URI` -> {name: folder or URI}; a URI stays a string (Path would fold its `//`)."""
    folders = parse_datasets(items)
    return {name: item.partition("=")[2] if "://" in item else folders[name] for name, item in
            zip(folders, items, strict=True)}  # fmt: skip


def _target(kfp_host: str, kfp_namespace: str):
    from components.orchestration.kfp_runs import KfpTarget

    try:
        return KfpTarget.from_options(kfp_host, kfp_namespace)
    except ValueError as exc:
        fail(f"--kfp-host: {exc}")


def _print(result: dict) -> None:
    print(json.dumps(result, indent=2))


@pipeline_app.command("submit")
def pipeline_submit(
    kfp_host: Annotated[str, KfpHost],
    curriculum: Annotated[Path, typer.Option(help="Curriculum YAML.")] = DEFAULT_CURRICULUM,
    gate: Annotated[Path, typer.Option(help="Gate YAML.")] = DEFAULT_GATE,
    dataset: Annotated[
        list[str], typer.Option(help="NAME=DIR or NAME=URI of the datasets (sent as NAME@VERSION: see retrain.py).")
    ] = DEFAULT_DATASETS,
    dataset_version: Annotated[list[str] | None, DatasetVersions] = None,
    tokenizer: Annotated[
        str, typer.Option(help="tokenizer.json as the stage pods see it: an s3://, gs:// URI or a path in the image.")
    ] = str(WORK / "tokenizer.json"),
    tracking_uri: Annotated[str, TrackingUri] = DEFAULT_TRACKING_URI,
    max_steps: Annotated[int, MaxSteps] = 0,
    kfp_namespace: Annotated[str, KfpNamespace] = "",
    force: Annotated[bool, typer.Option("--force/--no-force", help="Submit even if MLflow has this data trained.")] = (
        False
    ),
) -> None:
    """Submit the curriculum pipeline for these data versions, once: prints JSON with the run id (the run a
    previous attempt submitted when one with the same training key is live or succeeded)."""
    from components.orchestration.kfp_runs import KfpRunError
    from components.orchestration.retrain import RetrainRequest, submit_to_cluster

    _target(kfp_host, kfp_namespace)  # a host without its scheme fails here, naming the flag
    request = RetrainRequest(curriculum, gate, parse_locations(dataset), tokenizer, tracking_uri, WORK / "pipeline",
                             force, max_steps, kfp_host, versions=parse_versions(dataset_version or []),
                             kfp_namespace=kfp_namespace or None)  # fmt: skip
    try:
        with stdout_to_stderr():  # kfp prints links on stdout; stdout must hold only the JSON (Airflow's XCom)
            result = submit_to_cluster(request)
    except (SpecError, ValueError, FileNotFoundError, KfpRunError) as exc:
        fail(str(exc))
    _print(result)


@pipeline_app.command("status")
def pipeline_status(
    run_id: Annotated[str, typer.Argument(help="KFP run id.")],
    kfp_host: Annotated[str, KfpHost],
    kfp_namespace: Annotated[str, KfpNamespace] = "",
) -> None:
    """Print a KFP run's state as JSON (`final` is true once it succeeded, failed, was cancelled or skipped)."""
    from components.orchestration.kfp_runs import run_state

    _on_run(run_state, run_id, kfp_host, kfp_namespace)


@pipeline_app.command("cancel")
def pipeline_cancel(
    run_id: Annotated[str, typer.Argument(help="KFP run id.")],
    kfp_host: Annotated[str, KfpHost],
    kfp_namespace: Annotated[str, KfpNamespace] = "",
) -> None:
    """Terminate a live KFP run (a finished one is left alone); prints JSON."""
    from components.orchestration.kfp_runs import cancel_run

    _on_run(cancel_run, run_id, kfp_host, kfp_namespace)


def _on_run(action, run_id: str, kfp_host: str, kfp_namespace: str) -> None:
    """Apply `action(target, run_id)` to one KFP run and print its JSON answer; API errors end the command."""
    from components.orchestration.kfp_runs import KfpRunError

    target = _target(kfp_host, kfp_namespace)
    try:
        with stdout_to_stderr():  # kfp prints on stdout; stdout must hold only the JSON (Airflow's XCom)
            result = action(target, run_id)
    except KfpRunError as exc:
        fail(str(exc))
    _print(result)


@pipeline_app.command("finish")
def pipeline_finish(
    training_key: Annotated[str, typer.Option(help="The key `pipeline submit` printed.")],
    dataset_version: Annotated[list[str], DatasetVersions],
    gate: Annotated[Path, typer.Option(help="Gate YAML.")] = DEFAULT_GATE,
    tracking_uri: Annotated[str, TrackingUri] = DEFAULT_TRACKING_URI,
) -> None:
    """After a cluster run succeeded: mark its curriculum run completed in MLflow; print the outcome JSON
    (gate decision, champion) that `omnistage retrain --json` prints."""
    from components.orchestration.retrain import finish

    try:
        with stdout_to_stderr():
            outcome = finish(training_key, parse_versions(dataset_version), gate, tracking_uri)
    except (SpecError, ValueError) as exc:
        fail(str(exc))
    _print(outcome)
