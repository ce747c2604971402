"""What every command group shares: the console, the embedded defaults, argument parsing, error exits.

Nothing here imports torch, megatron or MLflow: `omnistage --help` and the commands that only read state
start in about a second.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import sys
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True, soft_wrap=True)  # long paths and run ids stay on one line in logs

REPO_ROOT = Path(__file__).resolve().parents[2]
WORK = REPO_ROOT / "work"
# The embedded defaults `make run` uses: a SQLite MLflow store and the demo dataset under work/.
DEFAULT_TRACKING_URI = f"sqlite:///{WORK / 'mlflow.db'}"
DEFAULT_DATASETS = [f"demo={WORK / 'datasets' / 'demo'}"]
DEFAULT_GATE = REPO_ROOT / "data_specs" / "gates" / "default.yaml"
DEFAULT_CURRICULUM = REPO_ROOT / "data_specs" / "curriculum" / "tiny.yaml"
DEFAULT_MODEL_NAME = "omnistage-omni-tiny"  # the gate default.yaml's model_name

TrackingUri = typer.Option(envvar="MLFLOW_TRACKING_URI", help="MLflow store (sqlite:///FILE or http://HOST:PORT).")
ModelName = typer.Option("--name", help="Registered model name.")
JsonOut = typer.Option("--json", help="Print the result as JSON on stdout.")


def fail(message: str) -> NoReturn:
    # escaped: messages quote YAML such as `train: [codec]`, which rich would take for markup and drop
    console.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code=2)


def parse_dataset_locations(items: list[str]) -> dict[str, str]:
    """`NAME=LOCATION` options -> {name: location}, the location as given (a folder, or `NAME@VERSION`)."""
    out = {}
    for item in items:
        name, sep, location = item.partition("=")
        if not sep or not name or not location:
            fail(f"--dataset takes NAME=DIR (e.g. demo=work/datasets/demo), got {item!r}")
        out[name] = location
    return out


def parse_datasets(items: list[str]) -> dict[str, Path]:
    """`NAME=DIR` options -> {name: folder}."""
    return {name: Path(folder) for name, folder in parse_dataset_locations(items).items()}


def load_dataset_spec(spec: Path | None, input_path: str | None):
    """A dataset spec from --spec FILE, or the default policy over --input DIR_OR_GLOB."""
    from components.specs.dataset import DatasetSpec
    from components.specs.loading import SpecError

    if (spec is None) == (input_path is None):
        fail("give exactly one of --spec FILE (a dataset spec) or --input DIR_OR_GLOB (ad-hoc, default policy)")
    try:
        return DatasetSpec.load(spec) if spec else DatasetSpec.adhoc(input_path)
    except SpecError as exc:
        fail(str(exc))


@contextlib.contextmanager
def stdout_to_stderr():
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


def short_read_gc() -> None:
    """Garbage collection for commands that only read and exit within seconds (`status`, `lineage`).

    They import MLflow (~2,300 modules) and hold little else: the cyclic collector runs hundreds of times
    during those imports and finds nothing, and the collection at shutdown walks every module again (~0.7 s
    of a 3.5 s `status`). So the collector is off for the command and the heap is frozen at exit. atexit
    handlers registered later (MLflow's) still run first. Commands that write do not use it: a file object
    left in a reference cycle would only be flushed by that last collection.
    """
    gc.disable()
    atexit.register(gc.freeze)
