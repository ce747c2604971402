"""Data commands: the demo corpus, ingestion, dataset versions (DVC) and the tokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from components.cli.common import REPO_ROOT, JsonOut, TrackingUri, console, fail, load_dataset_spec

app = typer.Typer()
dataset_app = typer.Typer(help="Dataset versions (DVC).", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")


@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Argument(help="Folder to write the corpus into.")],
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same files.")] = 0,
    size: Annotated[str, typer.Option(help="tiny | small | medium")] = "small",
    workers: Annotated[int, typer.Option(help="Parallel ffmpeg/espeak-ng processes.")] = 2,
    force: Annotated[bool, typer.Option(help="Rewrite even when the same corpus is already there.")] = False,
) -> None:
    """Write the deterministic synthetic corpus (all task families, train/eval splits, labels)."""
    from components.demo_data.corpus import write_demo_corpus
    from components.demo_data.synth import ToolMissing

    try:
        summary = write_demo_corpus(out, seed=seed, size=size, workers=workers, force=force)
    except (ToolMissing, ValueError) as exc:
        fail(str(exc))
    verb = "kept the existing" if summary["reused"] else "wrote"
    console.print(f"{verb} {summary['num_files']} files in {out} (seed {seed}, size {size})")


@app.command()
def ingest(
    out: Annotated[
        str,
        typer.Option(
            help="Output folder or object-storage URI (s3://bucket/prefix, gs://...; S3 endpoint from "
            "AWS_ENDPOINT_URL): shards/, manifest.parquet, quarantine.jsonl, ..."
        ),
    ],
    spec: Annotated[Path | None, typer.Option(help="Dataset spec YAML (data_specs/datasets/*.yaml).")] = None,
    input_path: Annotated[str | None, typer.Option("--input", help="Ad-hoc: a folder or glob, default policy.")] = None,
    workers: Annotated[int, typer.Option(help="Parallel decoding processes.", envvar="OMNISTAGE_WORKERS")] = 1,
    executor: Annotated[
        str,
        typer.Option(
            help="local (process pool on this machine) | ray (Ray tasks; without --ray-address a Ray is "
            "started on this machine with --workers CPUs and stopped at the end)."
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="With --executor ray: join this running Ray cluster (auto, HOST:6379, ray://HOST:10001) "
            "instead of starting one; its workers must run the omnistage image."
        ),
    ] = None,
    phase: Annotated[
        str,
        typer.Option(
            help="all | discover (count inputs) | probe (probe, validate, plan) | shard (write planned shards)."
        ),
    ] = "all",
    retry_quarantined: Annotated[
        bool,
        typer.Option(
            "--retry-quarantined",
            help="Re-attempt only the quarantined inputs of a finished ingestion in --out whose reason is "
            "transient (unreadable or missing file); new shards hold what is recovered.",
        ),
    ] = False,
    json_out: Annotated[bool, JsonOut] = False,
) -> None:
    """Probe, validate, sample, lay out and shard raw media into WebDataset shards."""
    from components.ingest.executors import ExecutorConfig
    from components.ingest.pipeline import discover_summary, ingest_dataset, probe_and_plan, write_shards
    from components.ingest.retry import retry_quarantined as retry

    try:
        engine = ExecutorConfig(engine=executor, ray_address=ray_address)
    except ValueError as exc:
        fail(str(exc))
    dataset = load_dataset_spec(spec, input_path)
    runners = {"all": ingest_dataset, "discover": discover_summary, "probe": probe_and_plan, "shard": write_shards}
    if retry_quarantined:
        if phase != "all":
            fail("--retry-quarantined re-attempts whole inputs on its own: leave out --phase")
        phase, runners = "retry", {"retry": retry}
    if phase not in runners:
        fail(f"--phase must be one of {sorted(runners)}, got {phase!r}")
    try:
        stats = runners[phase](dataset, out, workers, engine)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    if json_out:
        print(json.dumps(stats, indent=2))
    else:
        _print_summary(stats, out)


def _print_summary(stats: dict, out: str | Path) -> None:
    from rich.table import Table

    from components.object_storage import join

    table = Table(title=f"ingested into {out}")
    for key in ("inputs", "accepted", "probed_ok", "quarantined", "duplicates", "shards", "shards_planned",
                "media_seconds"):  # fmt: skip
        if key in stats:
            table.add_row(key, str(stats[key]))
    for key, value in stats.get("retry", {}).items():
        table.add_row(f"retry: {key}", str(value))
    console.print(table)
    if stats.get("quarantined"):
        console.print(f"quarantined files and reasons: {join(out, 'quarantine.jsonl')}")


@dataset_app.command("build")
def dataset_build(
    spec: Annotated[Path, typer.Option(help="Dataset spec YAML.")],
    out: Annotated[Path, typer.Option(help="Output folder inside the repository.")],
    workers: Annotated[int, typer.Option(help="Parallel shard writers.")] = 1,
    remote: Annotated[str | None, typer.Option(help="DVC remote URL (local folder, s3://, gs://).")] = None,
    repo: Annotated[Path, typer.Option(help="DVC repository root.")] = REPO_ROOT,
) -> None:
    """`dvc repro` the dataset's ingestion stage (skips when nothing changed), push, print the version."""
    from components.versioning.dvc_dataset import DvcError, build_dataset

    try:
        version = build_dataset(repo, load_dataset_spec(spec, None), spec, out, workers, remote)
    except (DvcError, ValueError) as exc:
        fail(str(exc))
    if not version.reproduced:
        console.print(f"dataset '{version.dataset}' unchanged: DVC skipped ingestion")
    print(json.dumps(version.as_dict(), indent=2))


@dataset_app.command("commit")
def dataset_commit(
    spec: Annotated[Path, typer.Option(help="Dataset spec YAML.")],
    out: Annotated[
        str, typer.Option(help="What the ingestion wrote: a folder inside the repository, or s3:// / gs:// URI.")
    ],
    remote: Annotated[str | None, typer.Option(help="DVC remote URL (required for a bucket --out).")] = None,
    repo: Annotated[Path, typer.Option(help="DVC repository root.")] = REPO_ROOT,
) -> None:
    """Record shards already written by `omnistage ingest` as the stage's outputs (a bucket's: imported into
    the DVC remote), push, print the version."""
    from components.orchestration.object_store import is_object_store_uri
    from components.versioning.dvc_dataset import DvcError, commit_dataset
    from components.versioning.dvc_remote_dataset import commit_remote_dataset

    dataset = load_dataset_spec(spec, None)
    try:
        if is_object_store_uri(out):
            version = commit_remote_dataset(repo, dataset, out, remote_url=remote)
        else:
            version = commit_dataset(repo, dataset, spec, Path(out), remote_url=remote)
    except (DvcError, ValueError) as exc:
        fail(str(exc))
    print(json.dumps(version.as_dict(), indent=2))


@dataset_app.command("pull")
def dataset_pull(
    name: Annotated[str, typer.Argument(help="Dataset name (the spec's `name`; its DVC stage is ingest-NAME).")],
    version: Annotated[str, typer.Argument(help="The dataset version: DVC md5 of the shard folder (`....dir`).")],
    out: Annotated[
        Path | None, typer.Option(help="Folder to restore the shards into (default: the stage's shards folder).")
    ] = None,
    remote: Annotated[
        str | None,
        typer.Option(help="DVC remote URL (default: the remote MLflow recorded with this version, else the "
                          "repository's first DVC remote)."),  # fmt: skip
    ] = None,
    repo: Annotated[Path, typer.Option(help="DVC repository root.")] = REPO_ROOT,
    tracking_uri: Annotated[str | None, TrackingUri] = None,
) -> None:
    """Restore a dataset version's shards from the DVC remote by the version alone (no dvc.lock needed)."""
    from components.versioning.dvc_dataset import DvcError, default_remote_url, stage_shards_folder
    from components.versioning.dvc_restore import restore_version

    if remote is None and tracking_uri:
        from components.tracking.mlflow_stage import recorded_remote

        remote = recorded_remote(name, version, tracking_uri)
        if remote and "://" not in remote and not Path(remote).is_absolute():  # as DVC resolves a relative remote
            remote = str((repo / ".dvc" / remote).resolve())
    try:
        remote_url = remote or default_remote_url(repo)
        target = out or stage_shards_folder(repo, name)
        summary = restore_version(remote_url, version, target)
    except (DvcError, ValueError) as exc:
        fail(str(exc))
    print(json.dumps({"dataset": name, "remote": remote_url, **summary}, indent=2))


@dataset_app.command("show")
def dataset_show(
    out: Annotated[Path, typer.Argument(help="An ingested dataset folder.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print stats.json (with the version) instead.")] = False,
) -> None:
    """Print an ingested dataset's stats, version and where its reports are."""
    from components.ingest.pipeline import IngestPaths

    paths = IngestPaths(out)
    if not paths.stats.is_file():
        fail(f"{out} holds no stats.json: ingest it first (omnistage ingest / omnistage dataset build)")
    stats = json.loads(paths.stats.read_text())
    if json_out:
        print(json.dumps(stats, indent=2))
        return
    _print_summary(stats, out)
    version = stats.get("version") or {}
    console.print(f"version: {version.get('version', 'not versioned')} (git {str(version.get('git_commit'))[:12]})")
    for what, path in (
        ("manifest", paths.manifest),
        ("quarantine", paths.quarantine),
        ("dataset card", out / "card" / "README.md"),
        ("data docs", paths.validation / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"),
    ):
        console.print(f"{what}: {path}")


@app.command("tokenizer")
def tokenizer(
    dataset: Annotated[Path, typer.Option(help="An ingested dataset folder (with shards/).")],
    out: Annotated[Path, typer.Option(help="Where to write tokenizer.json.")],
    vocab_size: Annotated[int, typer.Option(help="BPE vocabulary size, special tokens included.")] = 1024,
) -> None:
    """Train the byte-level BPE tokenizer on the dataset's training-split text."""
    from components.training.tokenizer_corpus import build_tokenizer

    try:
        summary = build_tokenizer(dataset, out, vocab_size)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    print(json.dumps(summary, indent=2))
