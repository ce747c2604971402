"""The `omnistage` command line. Each command is a few lines around a library function, the same one
the Airflow DAGs, the KFP components and the tests call."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from components.specs.loading import SpecError

app = typer.Typer(help="omnistage: data, training and promotion for omni-modal MoE models.", no_args_is_help=True)
dataset_app = typer.Typer(help="Dataset versions (DVC).", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks; results belong in benchmarks/README.md.", no_args_is_help=True)
pipeline_app = typer.Typer(help="Kubeflow pipelines: compile, or run locally with kfp.local.", no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")
model_app = typer.Typer(help="The model: presets and parameter accounting.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(dataset_app, name="dataset")
app.add_typer(bench_app, name="bench")
console = Console(stderr=True)

REPO_ROOT = Path(__file__).resolve().parents[1]


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    for noisy in ("great_expectations", "urllib3", "matplotlib", "PIL", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=2)


def _load_spec(spec: Path | None, input_path: str | None):
    from components.specs.dataset import DatasetSpec

    if (spec is None) == (input_path is None):
        _fail("give exactly one of --spec FILE (a dataset spec) or --input DIR_OR_GLOB (ad-hoc, default policy)")
    try:
        return DatasetSpec.load(spec) if spec else DatasetSpec.adhoc(input_path)
    except SpecError as exc:
        _fail(str(exc))


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
        _fail(str(exc))
    verb = "kept the existing" if summary["reused"] else "wrote"
    console.print(f"{verb} {summary['num_files']} files in {out} (seed {seed}, size {size})")


@app.command()
def ingest(
    out: Annotated[Path, typer.Option(help="Output folder (shards/, manifest.parquet, quarantine.jsonl, ...).")],
    spec: Annotated[Path | None, typer.Option(help="Dataset spec YAML (data_specs/datasets/*.yaml).")] = None,
    input_path: Annotated[str | None, typer.Option("--input", help="Ad-hoc: a folder or glob, default policy.")] = None,
    workers: Annotated[int, typer.Option(help="Parallel decoding processes.", envvar="OMNISTAGE_WORKERS")] = 1,
    phase: Annotated[
        str,
        typer.Option(
            help="all | discover (count inputs) | probe (probe, validate, plan) | shard (write planned shards)."
        ),
    ] = "all",
    json_out: Annotated[bool, typer.Option("--json", help="Print the stats as JSON on stdout.")] = False,
) -> None:
    """Probe, validate, sample, lay out and shard raw media into WebDataset shards."""
    from components.ingest.pipeline import discover_summary, ingest_dataset, probe_and_plan, write_shards

    dataset = _load_spec(spec, input_path)
    runners = {"all": ingest_dataset, "discover": discover_summary, "probe": probe_and_plan, "shard": write_shards}
    if phase not in runners:
        _fail(f"--phase must be one of {sorted(runners)}, got {phase!r}")
    try:
        stats = runners[phase](dataset, out, workers)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    if json_out:
        print(json.dumps(stats, indent=2))
    else:
        _print_summary(stats, out)


def _print_summary(stats: dict, out: Path) -> None:
    from rich.table import Table

    table = Table(title=f"ingested into {out}")
    for key in (
        "inputs",
        "accepted",
        "probed_ok",
        "quarantined",
        "duplicates",
        "shards",
        "shards_planned",
        "media_seconds",
    ):
        if key in stats:
            table.add_row(key, str(stats[key]))
    console.print(table)
    if stats.get("quarantined"):
        console.print(f"quarantined files and reasons: {out / 'quarantine.jsonl'}")


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
        version = build_dataset(repo, _load_spec(spec, None), spec, out, workers, remote)
    except (DvcError, ValueError) as exc:
        _fail(str(exc))
    if not version.reproduced:
        console.print(f"dataset '{version.dataset}' unchanged: DVC skipped ingestion")
    print(json.dumps(version.as_dict(), indent=2))


@dataset_app.command("commit")
def dataset_commit(
    spec: Annotated[Path, typer.Option(help="Dataset spec YAML.")],
    out: Annotated[Path, typer.Option(help="Folder the ingestion wrote, inside the repository.")],
    remote: Annotated[str | None, typer.Option(help="DVC remote URL.")] = None,
    repo: Annotated[Path, typer.Option(help="DVC repository root.")] = REPO_ROOT,
) -> None:
    """Record shards already written by `omnistage ingest` as the stage's outputs, push, print the version."""
    from components.versioning.dvc_dataset import DvcError, commit_dataset

    try:
        version = commit_dataset(repo, _load_spec(spec, None), spec, out, remote_url=remote)
    except (DvcError, ValueError) as exc:
        _fail(str(exc))
    print(json.dumps(version.as_dict(), indent=2))


@dataset_app.command("show")
def dataset_show(out: Annotated[Path, typer.Argument(help="An ingested dataset folder.")]) -> None:
    """Print an ingested dataset's stats, version and where its reports are."""
    from components.ingest.pipeline import IngestPaths

    paths = IngestPaths(out)
    if not paths.stats.is_file():
        _fail(f"{out} holds no stats.json: ingest it first (omnistage ingest / omnistage dataset build)")
    stats = json.loads(paths.stats.read_text())
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
        _fail(str(exc))
    print(json.dumps(summary, indent=2))


@app.command()
def train(
    curriculum: Annotated[Path, typer.Option(help="Curriculum YAML (data_specs/curriculum/*.yaml).")],
    stage: Annotated[str, typer.Option(help="Stage name in the curriculum.")],
    dataset: Annotated[list[str], typer.Option(help="NAME=DIR of an ingested dataset; repeat per dataset.")],
    tokenizer: Annotated[Path, typer.Option(help="tokenizer.json (omnistage tokenizer).")],
    out: Annotated[Path, typer.Option(help="Stage output folder (its checkpoint goes here).")],
    init_from: Annotated[Path | None, typer.Option(help="Previous stage's checkpoint (weights only).")] = None,
    resume: Annotated[bool, typer.Option(help="Resume this stage from its own checkpoint in --out.")] = False,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps (smoke runs).")] = None,
) -> None:
    """Train one curriculum stage (single process; see components/training/stage_runner.py)."""
    from components.specs.curriculum import CurriculumSpec
    from components.training.stage_runner import StageRun, run_stage

    try:
        spec = CurriculumSpec.load(curriculum)
        datasets = {}
        for item in dataset:
            name, sep, folder = item.partition("=")
            if not sep:
                raise ValueError(f"--dataset takes NAME=DIR, got {item!r}")
            datasets[name] = Path(folder)
        result = run_stage(StageRun(spec, stage, datasets, tokenizer, out, init_from, resume, max_steps))
    except (SpecError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    print(json.dumps({"stage": result.stage, "steps": result.steps, "final_loss": result.final_loss,
                      "checkpoint": str(result.checkpoint), "packing_efficiency": result.packing_efficiency,
                      "skipped_too_long": result.skipped_too_long}, indent=2))  # fmt: skip


@pipeline_app.command("compile")
def pipeline_compile(
    curriculum: Annotated[Path, typer.Option(help="Curriculum YAML.")],
    out: Annotated[Path, typer.Option(help="Where to write the compiled pipeline YAML.")],
) -> None:
    """Compile the curriculum pipeline (one GPU task per stage) for a Kubeflow Pipelines cluster."""
    from components.pipelines.curriculum_pipeline import compile_pipeline

    try:
        compile_pipeline(curriculum, out)
    except SpecError as exc:
        _fail(str(exc))
    console.print(f"compiled {curriculum} -> {out}")


@pipeline_app.command("run-local")
def pipeline_run_local(
    curriculum: Annotated[Path, typer.Option(help="Curriculum YAML.")],
    dataset: Annotated[list[str], typer.Option(help="NAME=DIR of an ingested dataset; repeat per dataset.")],
    tokenizer: Annotated[Path, typer.Option(help="tokenizer.json.")],
    root: Annotated[Path, typer.Option(help="Pipeline root for artifacts (checkpoints).")],
    tracking_uri: Annotated[str, typer.Option(envvar="MLFLOW_TRACKING_URI")] = "",
    max_steps: Annotated[int, typer.Option(help="Steps per stage (0: each stage's budget).")] = 0,
) -> None:
    """Run the whole curriculum pipeline on this machine through kfp.local (SubprocessRunner)."""
    from components.pipelines.curriculum_pipeline import run_locally

    datasets = dict(item.split("=", 1) for item in dataset)
    run_locally(curriculum, datasets, tokenizer, tracking_uri or DEFAULT_TRACKING_URI, root, max_steps)


DEFAULT_TRACKING_URI = f"sqlite:///{REPO_ROOT / 'work' / 'mlflow.db'}"


@app.command()
def lineage(
    target: Annotated[
        str | None, typer.Argument(help="models:/NAME/VERSION, models:/NAME@ALIAS or a checkpoint")
    ] = None,
    input_file: Annotated[str | None, typer.Option(help="Walk forward from a raw file (path or sha256).")] = None,
    tracking_uri: Annotated[str, typer.Option(envvar="MLFLOW_TRACKING_URI")] = DEFAULT_TRACKING_URI,
) -> None:
    """Walk lineage back (model -> checkpoints -> datasets -> files) or forward (file -> models)."""
    from components.tracking.lineage import lineage_back, lineage_forward

    if (target is None) == (input_file is None):
        _fail("give a model/checkpoint to walk back from, or --input-file to walk forward from")
    try:
        result = lineage_forward(input_file, tracking_uri) if input_file else lineage_back(target, tracking_uri)
    except ValueError as exc:
        _fail(str(exc))
    print(json.dumps(result, indent=2))


# The paper's numbers (REFERENCE.md sections 2-3) that `model params` compares against.
PAPER_PARAMS = {"llm_total": 560.66e9, "llm_activated_k0": 18.69e9, "llm_activated_k8": 27.15e9,
                "llm_activated_k12": 31.38e9, "vit_total": 637e6}  # fmt: skip


@model_app.command("params")
def model_params(
    preset: Annotated[str, typer.Option(help="tiny | small | longcat-flash-omni")] = "longcat-flash-omni",
    json_out: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Count parameters of the modules the code builds (meta device), total and activated per k experts."""
    from model.config import get_preset
    from model.params import count_parameters

    try:
        counts = count_parameters(get_preset(preset))
    except ValueError as exc:
        _fail(str(exc))
    if json_out:
        print(json.dumps(counts, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"parameters of preset {preset}")
    for column in ("part", "count", "billions", "paper", "deviation"):
        table.add_column(column, justify="right")
    for key, value in counts.items():
        paper = PAPER_PARAMS.get(key) if preset == "longcat-flash-omni" else None
        deviation = f"{100 * (value - paper) / paper:+.3f}%" if paper else ""
        table.add_row(key, f"{value:,}", f"{value / 1e9:.3f}", f"{paper / 1e9:.3f}" if paper else "", deviation)
    console.print(table)


@bench_app.command("ingest")
def bench_ingest(
    num_videos: Annotated[int, typer.Option(help="Videos to generate (>= 20 for a reportable run).")] = 20,
    workers: Annotated[str, typer.Option(help="Comma-separated worker counts to measure.")] = "1,2",
    json_out: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
    keep: Annotated[Path | None, typer.Option(help="Keep the generated videos and outputs here.")] = None,
) -> None:
    """Media-seconds per CPU-second of ingestion vs bare ffmpeg decoding, and shard read throughput."""
    from components.bench.ingest_throughput import run_benchmark

    results = run_benchmark(num_videos, [int(w) for w in workers.split(",")], keep)
    if json_out:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            console.print(f"{key}: {value}")


@bench_app.command("train")
def bench_train(
    dataset: Annotated[Path, typer.Option(help="Ingested dataset folder.")] = REPO_ROOT / "work/datasets/demo",
    tokenizer: Annotated[Path, typer.Option(help="tokenizer.json.")] = REPO_ROOT / "work/tokenizer.json",
    curriculum: Annotated[Path, typer.Option(help="Mixtures: first stage = text, last = multimodal.")] = (
        REPO_ROOT / "data_specs/curriculum/tiny.yaml"
    ),
    preset: Annotated[str, typer.Option(help="Model preset.")] = "small",
    seq_length: Annotated[int, typer.Option(help="Tokens per packed sequence.")] = 1024,
    steps: Annotated[int, typer.Option(help="Measured steps per kind.")] = 10,
    json_out: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Tokens/s on text-only vs multimodal sequences, packing efficiency, MLflow tracking overhead."""
    from components.bench.train_throughput import run_benchmark

    for path in (dataset, tokenizer, curriculum):
        if not Path(path).exists():
            _fail(f"{path} does not exist: run `make run` first (it ingests the demo corpus), or pass it")
    try:
        results = run_benchmark(dataset, tokenizer, curriculum, preset, seq_length, steps)
    except (SpecError, ValueError) as exc:
        _fail(str(exc))
    if json_out:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            console.print(f"{key}: {value}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
