"""Benchmark commands; their results belong in benchmarks/README.md with the machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from components.cli.common import (
    DEFAULT_CURRICULUM,
    DEFAULT_MODEL_NAME,
    DEFAULT_TRACKING_URI,
    WORK,
    JsonOut,
    ModelName,
    TrackingUri,
    console,
    fail,
)

app = typer.Typer()
bench_app = typer.Typer(help="Benchmarks; results belong in benchmarks/README.md.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _print_results(results: dict, json_out: bool) -> None:
    if json_out:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            console.print(f"{key}: {value}")


@bench_app.command("ingest")
def bench_ingest(
    num_videos: Annotated[int, typer.Option(help="Videos to generate (>= 20 for a reportable run).")] = 20,
    workers: Annotated[str, typer.Option(help="Comma-separated worker counts to measure.")] = "1,2",
    json_out: Annotated[bool, JsonOut] = False,
    keep: Annotated[Path | None, typer.Option(help="Keep the generated videos and outputs here.")] = None,
) -> None:
    """Media-seconds per CPU-second of ingestion vs bare ffmpeg decoding, and shard read throughput."""
    from components.bench.ingest_throughput import run_benchmark

    _print_results(run_benchmark(num_videos, [int(w) for w in workers.split(",")], keep), json_out)


@bench_app.command("train")
def bench_train(
    dataset: Annotated[Path, typer.Option(help="Ingested dataset folder.")] = WORK / "datasets/demo",
    tokenizer: Annotated[Path, typer.Option(help="tokenizer.json.")] = WORK / "tokenizer.json",
    curriculum: Annotated[Path, typer.Option(help="Mixtures: first stage = text, last = multimodal.")] = (
        DEFAULT_CURRICULUM
    ),
    preset: Annotated[str, typer.Option(help="Model preset.")] = "small",
    seq_length: Annotated[int, typer.Option(help="Tokens per packed sequence.")] = 1024,
    steps: Annotated[int, typer.Option(help="Measured steps per kind.")] = 10,
    json_out: Annotated[bool, JsonOut] = False,
) -> None:
    """Tokens/s on text-only vs multimodal sequences, packing efficiency, MLflow tracking overhead."""
    from components.bench.train_throughput import run_benchmark
    from components.specs.loading import SpecError

    for path in (dataset, tokenizer, curriculum):
        if not Path(path).exists():
            fail(f"{path} does not exist: run `make run` first (it ingests the demo corpus), or pass it")
    try:
        results = run_benchmark(dataset, tokenizer, curriculum, preset, seq_length, steps)
    except (SpecError, ValueError) as exc:
        fail(str(exc))
    _print_results(results, json_out)


@bench_app.command("cli")
def bench_cli(
    tracking_uri: Annotated[str, TrackingUri] = DEFAULT_TRACKING_URI,
    model_name: Annotated[str, ModelName] = DEFAULT_MODEL_NAME,
    input_file: Annotated[Path | None, typer.Option(help="A raw file for `lineage --input-file`.")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Runs of each command.")] = 3,
    json_out: Annotated[bool, JsonOut] = False,
) -> None:
    """Wall time of `--help`, `status` and `lineage` as fresh processes (goal: status < 3 s)."""
    from components.bench.cli_latency import run_benchmark

    try:
        results = run_benchmark(tracking_uri, model_name, input_file, repeats)
    except (ValueError, RuntimeError) as exc:
        fail(str(exc))
    _print_results(results, json_out)


@bench_app.command("parallel")
def bench_parallel(
    dataset: Annotated[Path, typer.Option(help="Ingested dataset folder.")] = WORK / "datasets/demo",
    tokenizer: Annotated[Path, typer.Option(help="tokenizer.json.")] = WORK / "tokenizer.json",
    curriculum: Annotated[Path, typer.Option(help="Curriculum holding --stage.")] = DEFAULT_CURRICULUM,
    stage: Annotated[str, typer.Option(help="Multimodal stage to train (images, video, speech).")] = "sft",
    preset: Annotated[str, typer.Option(help="Model preset: tiny or small.")] = "tiny",
    steps: Annotated[int, typer.Option(min=1, help="Steps per run (tokens/s: median after the first).")] = 5,
    seq_length: Annotated[int, typer.Option(min=64, help="Tokens per packed sequence.")] = 512,
    layouts: Annotated[str, typer.Option(help="Comma-separated 2-process layouts: dp2,tp2-sp,ep2,pp2.")] = (
        "dp2,tp2-sp,ep2,pp2"
    ),
    ratio: Annotated[bool, typer.Option(help="Measure multimodal_vs_text_ratio at dp2.")] = True,
    paper_frames: Annotated[bool, typer.Option(help="Measure it with the paper's frame sizes too.")] = True,
    paper_seq_length: Annotated[int, typer.Option(min=1024, help="Sequence length of the paper-frames runs.")] = 4096,
    json_out: Annotated[bool, JsonOut] = False,
) -> None:
    """2-process stage training per layout (DP2, TP2+SP, EP2, PP2) against 1 process: gradient and loss
    differences, tokens/s and scaling; multimodal vs text-only tokens/s at DP2 (demo and paper frame sizes)."""
    from components.bench.parallel_scaling import BenchSettings, format_table, run_benchmark
    from components.specs.loading import SpecError

    try:
        settings = BenchSettings(dataset, tokenizer, curriculum, stage, preset, steps, seq_length,
                                 layouts=[name for name in layouts.split(",") if name], ratio=ratio,
                                 paper_frames=paper_frames, paper_seq_length=paper_seq_length)  # fmt: skip
        results = run_benchmark(settings)
    except (SpecError, ValueError, RuntimeError) as exc:
        fail(str(exc))
    if json_out:
        print(json.dumps(results, indent=2))
    else:
        console.print(format_table(results), highlight=False)


@bench_app.command("stream")
def bench_stream(
    model: Annotated[str, typer.Option(help="Registry version to serve.")] = f"models:/{DEFAULT_MODEL_NAME}@champion",
    dataset: Annotated[Path, typer.Option(help="Ingested dataset whose eval clips are replayed.")] = (
        WORK / "datasets" / "demo"),
    sessions: Annotated[int, typer.Option(min=1, help="Concurrent conversations.")] = 4,
    seconds: Annotated[float, typer.Option(min=1, help="How long the clients keep starting turns.")] = 60,
    tracking_uri: Annotated[str, TrackingUri] = DEFAULT_TRACKING_URI,
    json_out: Annotated[bool, JsonOut] = False,
) -> None:
    """N concurrent conversations against one streaming server: latency percentiles, isolation."""
    from components.bench.stream_load import run_benchmark

    try:
        results = run_benchmark(model, tracking_uri, dataset, sessions, seconds)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        fail(str(exc))
    _print_results(results, json_out)
