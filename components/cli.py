"""The `omnistage` command line. Each command is a few lines around a library function, the same one
the Airflow DAGs, the KFP components and the tests call."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
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
console = Console(stderr=True, soft_wrap=True)  # long paths and run ids stay on one line in logs

REPO_ROOT = Path(__file__).resolve().parents[1]
# The embedded defaults `make run` uses: a SQLite MLflow store and the demo dataset under work/.
DEFAULT_TRACKING_URI = f"sqlite:///{REPO_ROOT / 'work' / 'mlflow.db'}"
DEFAULT_DATASETS = [f"demo={REPO_ROOT / 'work' / 'datasets' / 'demo'}"]
DEFAULT_GATE = REPO_ROOT / "data_specs" / "gates" / "default.yaml"


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
def dataset_show(
    out: Annotated[Path, typer.Argument(help="An ingested dataset folder.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print stats.json (with the version) instead.")] = False,
) -> None:
    """Print an ingested dataset's stats, version and where its reports are."""
    from components.ingest.pipeline import IngestPaths

    paths = IngestPaths(out)
    if not paths.stats.is_file():
        _fail(f"{out} holds no stats.json: ingest it first (omnistage ingest / omnistage dataset build)")
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
    gate: Annotated[Path | None, typer.Option(help="Gate YAML: end with evaluate -> gate -> promote.")] = None,
) -> None:
    """Compile the curriculum pipeline (one GPU task per stage) for a Kubeflow Pipelines cluster."""
    from components.pipelines.curriculum_pipeline import compile_pipeline

    try:
        compile_pipeline(curriculum, out, gate)
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
    gate: Annotated[Path | None, typer.Option(help="Gate YAML: end with evaluate -> gate -> promote.")] = None,
) -> None:
    """Run the whole curriculum pipeline on this machine through kfp.local (SubprocessRunner)."""
    from components.pipelines.curriculum_pipeline import run_locally

    run_locally(curriculum, _datasets(dataset), tokenizer, tracking_uri or DEFAULT_TRACKING_URI, root, max_steps,
                gate)  # fmt: skip


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


def _datasets(items: list[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep:
            _fail(f"--dataset takes NAME=DIR, got {item!r}")
        out[name] = Path(folder)
    return out


@app.command()
def evaluate(
    model: Annotated[str, typer.Option(help="Checkpoint folder, runs:/..., models:/NAME/VERSION or @ALIAS.")],
    suites: Annotated[list[str] | None, typer.Option(help="Suite names (data_specs/evals); all by default.")] = None,
    dataset: Annotated[list[str], typer.Option(help="NAME=DIR of the ingested datasets the suites read.")] = (
        DEFAULT_DATASETS
    ),
    tracking_uri: Annotated[str, typer.Option(envvar="MLFLOW_TRACKING_URI")] = DEFAULT_TRACKING_URI,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Score a model on held-out eval suites (bootstrap 95% CIs), after a contamination check."""
    from components.evaluation.contamination import ContaminationError
    from components.evaluation.evaluate import evaluate_model

    try:
        result = evaluate_model(model, _datasets(dataset), tracking_uri, suites or None)
    except ContaminationError as exc:
        _fail(f"contamination: {exc}")
    except (SpecError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    if json_out:
        print(json.dumps(result.summary(), indent=2))
        return
    from rich.table import Table

    table = Table(title=f"evaluation of {model}")
    for column in ("suite", "metric", "value", "95% CI", "chance", "above chance", "items"):
        table.add_column(column)
    for r in result.results:
        table.add_row(r.suite, r.metric, f"{r.value:.4g}", f"[{r.ci_low:.4g}, {r.ci_high:.4g}]", f"{r.chance:.4g}",
                      "yes" if r.above_chance else "no", str(r.n_items))  # fmt: skip
    console.print(table)
    console.print(f"report: {result.report}  (MLflow run {result.run_id})")


def _print_decision(outcome: dict, json_out: bool) -> None:
    if json_out:
        print(json.dumps(outcome, indent=2))
        return
    decision = outcome["decision"]
    colour = {"promoted": "green", "rejected": "red"}.get(decision["status"], "yellow")
    console.print(f"{outcome['model']} v{outcome['version']}: [{colour}]{decision['status']}[/{colour}]"
                  f" -> champion is v{outcome['champion']}")  # fmt: skip
    for rule in decision["rules"]:
        console.print(f"  {'ok  ' if rule['passed'] else 'FAIL'} {rule['rule']:<14} {rule['detail']}")


@app.command()
def promote(
    model: Annotated[str, typer.Option(help="Checkpoint folder, runs:/... or models:/NAME/VERSION.")],
    gate: Annotated[Path, typer.Option(help="Gate YAML (data_specs/gates).")] = DEFAULT_GATE,
    dataset: Annotated[list[str], typer.Option(help="NAME=DIR of the datasets the suites read.")] = (DEFAULT_DATASETS),
    tracking_uri: Annotated[str, typer.Option(envvar="MLFLOW_TRACKING_URI")] = DEFAULT_TRACKING_URI,
    reuse_evaluation: Annotated[bool, typer.Option(help="Use the version's latest evaluation if any.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
) -> None:
    """Register the model, evaluate, judge it with the gate; move `champion` only when every rule passes."""
    from components.evaluation.contamination import ContaminationError
    from components.promotion.registry import promote as run_promote
    from components.specs.evals import GateSpec

    try:
        outcome = run_promote(model, GateSpec.load(gate), _datasets(dataset), tracking_uri,
                              evaluate=not reuse_evaluation)  # fmt: skip
    except ContaminationError as exc:
        _fail(f"contamination: {exc}")
    except (SpecError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    _print_decision(outcome, json_out)


@app.command()
def approve(
    version: Annotated[str, typer.Argument(help="Model version to approve.")],
    gate: Annotated[Path, typer.Option(help="Gate YAML the version is judged with.")] = DEFAULT_GATE,
    approver: Annotated[str, typer.Option(help="Who approves (recorded on the version).")] = "",
    tracking_uri: Annotated[str, typer.Option(envvar="MLFLOW_TRACKING_URI")] = DEFAULT_TRACKING_URI,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Record a human approval for a version awaiting one; it is promoted if every other rule passes."""
    import getpass

    from components.promotion.registry import approve as run_approve
    from components.specs.evals import GateSpec

    try:
        spec = GateSpec.load(gate)
        outcome = run_approve(spec.model_name, version, approver or getpass.getuser(), spec, tracking_uri)
    except (SpecError, ValueError) as exc:
        _fail(str(exc))
    _print_decision(outcome, json_out)


@app.command()
def rollback(
    model_name: Annotated[str, typer.Option("--name", help="Registered model name.")] = "omnistage-omni-tiny",
    tracking_uri: Annotated[str, typer.Option(envvar="MLFLOW_TRACKING_URI")] = DEFAULT_TRACKING_URI,
) -> None:
    """Move `champion` back to `previous-champion`."""
    from components.promotion.registry import rollback as run_rollback

    try:
        outcome = run_rollback(model_name, tracking_uri)
    except ValueError as exc:
        _fail(str(exc))
    console.print(f"{outcome['model']}: champion v{outcome['demoted']} -> v{outcome['champion']}")


@app.command()
def status(
    model_name: Annotated[str, typer.Option("--name", help="Registered model name.")] = "omnistage-omni-tiny",
    tracking_uri: Annotated[str, typer.Option(envvar="MLFLOW_TRACKING_URI")] = DEFAULT_TRACKING_URI,
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """The current champion (run, data version) and the last gate decision with its reasons."""
    from components.promotion.registry import registry_status

    result = registry_status(model_name, tracking_uri)
    if json_out:
        print(json.dumps(result, indent=2))
        return
    champ = result["champion"]
    if champ is None:
        console.print(f"{model_name}: no champion yet (run `make run`, or `omnistage promote`)")
    else:
        console.print(f"champion: {champ['name']} v{champ['version']}  curriculum run {champ['run_id']}  "
                      f"data version {champ['data_version']}")  # fmt: skip
    last = result["last_decision"]
    if last:
        console.print(f"last gate decision: v{last['version']} {last['status']} (gate {last['gate']}, "
                      f"judged against v{last['judged_against']})")  # fmt: skip
        for reason in last["reasons"]:
            console.print(f"  - {reason}")


@app.command()
def retrain(
    curriculum: Annotated[Path, typer.Option(help="Curriculum YAML.")] = REPO_ROOT / "data_specs/curriculum/tiny.yaml",
    gate: Annotated[Path, typer.Option(help="Gate YAML.")] = DEFAULT_GATE,
    dataset: Annotated[list[str], typer.Option(help="NAME=DIR of the ingested datasets.")] = DEFAULT_DATASETS,
    tokenizer: Annotated[Path, typer.Option(help="tokenizer.json.")] = REPO_ROOT / "work/tokenizer.json",
    root: Annotated[Path, typer.Option(help="Pipeline root (stage checkpoints).")] = REPO_ROOT / "work/pipeline",
    tracking_uri: Annotated[str, typer.Option(envvar="MLFLOW_TRACKING_URI")] = DEFAULT_TRACKING_URI,
    max_steps: Annotated[int, typer.Option(help="Steps per stage (0: each stage's budget).")] = 0,
    kfp_host: Annotated[str, typer.Option(help="KFP API endpoint; empty runs kfp.local here.")] = "",
    force: Annotated[bool, typer.Option("--force/--no-force", help="Retrain an already trained data version.")] = (
        False
    ),
    json_out: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Curriculum pipeline -> evaluate -> gate -> promote for the current data, unless already trained."""
    from components.orchestration.retrain import RetrainRequest
    from components.orchestration.retrain import retrain as run_retrain

    request = RetrainRequest(curriculum, gate, _datasets(dataset), tokenizer, tracking_uri, root, force, max_steps,
                             kfp_host or None)  # fmt: skip
    try:
        # kfp.local logs its tasks on stdout; with --json stdout must hold only the result (Airflow's XCom).
        with _stdout_to_stderr() if json_out else contextlib.nullcontext():
            outcome = run_retrain(request)
    except (SpecError, ValueError, FileNotFoundError, RuntimeError) as exc:
        _fail(str(exc))
    if json_out:
        print(json.dumps(outcome, indent=2))
    else:
        _print_run_summary(outcome, tracking_uri)


@contextlib.contextmanager
def _stdout_to_stderr():
    """Send everything written to file descriptor 1 (this process and its children) to stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


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
    max_steps: Annotated[int, typer.Option(help="Steps per stage (0: each stage's budget).")] = 0,
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
    work = REPO_ROOT / "work"
    spec_path = REPO_ROOT / "data_specs/datasets/demo.yaml"
    corpus = write_demo_corpus(work / "raw" / "demo", seed=0, size=size, workers=workers)
    console.print(f"[bold]1/4 demo corpus[/bold]: {corpus['num_files']} files"
                  f"{' (reused)' if corpus.get('reused') else ''}")  # fmt: skip
    try:
        version = build_dataset(REPO_ROOT, DatasetSpec.load(spec_path), spec_path, work / "datasets" / "demo",
                                workers=workers)  # fmt: skip
    except (DvcError, SpecError, ValueError) as exc:
        _fail(str(exc))
    info = version.as_dict()
    said = "ingested" if info.get("reproduced") else "unchanged: DVC skipped ingestion"
    console.print(f"[bold]2/4 dataset[/bold] demo version {info['version']} ({said})")
    tokenizer_path = work / "tokenizer.json"
    marker = work / "tokenizer.version"
    if not tokenizer_path.is_file() or not marker.is_file() or marker.read_text() != info["version"]:
        build_tokenizer(work / "datasets" / "demo", tokenizer_path, vocab_size=1024)
        marker.write_text(info["version"])
    console.print(f"[bold]3/4 tokenizer[/bold]: {tokenizer_path}")
    console.print("[bold]4/4 curriculum[/bold] (7 stages through kfp.local) -> evaluate -> gate -> promote")
    request = RetrainRequest(REPO_ROOT / "data_specs/curriculum/tiny.yaml", DEFAULT_GATE,
                             {"demo": work / "datasets" / "demo"}, tokenizer_path, DEFAULT_TRACKING_URI,
                             work / "pipeline", force, max_steps)  # fmt: skip
    outcome = run_retrain(request)
    console.rule("what happened")
    _print_run_summary(outcome, DEFAULT_TRACKING_URI)
    console.print(f"dataset card: {work / 'datasets/demo/card/README.md'}")
    console.print(f"stage checkpoints: {work / 'pipeline'}")
    console.print(f"status any time: omnistage status    wall time: {time.monotonic() - started:.0f} s")


@app.command("screenshots")
def screenshots(
    out: Annotated[Path, typer.Option(help="Folder for the PNGs.")] = REPO_ROOT / "docs" / "screenshots",
    model_name: Annotated[str, typer.Option("--name", help="Registered model.")] = "omnistage-omni-tiny",
    tracking_uri: Annotated[str, typer.Option(envvar="MLFLOW_TRACKING_URI")] = DEFAULT_TRACKING_URI,
) -> None:
    """Headless-Chromium screenshots of the MLflow UI (run tree, registry), GX Data Docs and the dataset card."""
    from components.tracking.experiments import local_artifact_root
    from components.tracking.mlflow_ui import readme_screenshots

    out.mkdir(parents=True, exist_ok=True)
    root = local_artifact_root(tracking_uri) or str(REPO_ROOT / "work" / "mlartifacts")
    for path in readme_screenshots(tracking_uri, root, model_name, REPO_ROOT / "work/datasets/demo", out):
        console.print(f"wrote {path}")


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
