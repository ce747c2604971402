"""The `omnistage` command line, one module per command group. Each command is a few lines around a
library function, the same one the Airflow DAGs, the KFP components and the tests call.

Modules import only typer, rich and the light spec types at the top; everything heavy (torch, megatron,
MLflow, DVC, Great Expectations) is imported inside the command that needs it, so `--help` and the
commands that only read state answer in about a second.
"""

from __future__ import annotations

from typing import Annotated

import typer

from components.cli import bench, data, model, pipeline, pipeline_runs, rayjob, registry, serve, train, ui
from components.logging_config import configure_logging

app = typer.Typer(help="omnistage: data, training and promotion for omni-modal MoE models.", no_args_is_help=True)
for group in (data, train, model, registry, serve, pipeline, pipeline_runs, bench, ui):
    app.add_typer(group.app)
_ = rayjob  # registers `dataset rayjob` on data's dataset group


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    configure_logging(verbose)


def main() -> None:
    app()
