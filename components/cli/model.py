"""Model commands: presets and parameter accounting against the paper."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from components.cli.common import JsonOut, console, fail

app = typer.Typer()
model_app = typer.Typer(help="The model: presets and parameter accounting.", no_args_is_help=True)
app.add_typer(model_app, name="model")

# The paper's numbers (REFERENCE.md sections 2-3) that `model params` compares against.
PAPER_PARAMS = {"llm_total": 560.66e9, "llm_activated_k0": 18.69e9, "llm_activated_k8": 27.15e9,
                "llm_activated_k12": 31.38e9, "vit_total": 637e6}  # fmt: skip


@model_app.command("params")
def model_params(
    preset: Annotated[str, typer.Option(help="tiny | small | longcat-flash-omni")] = "longcat-flash-omni",
    json_out: Annotated[bool, JsonOut] = False,
) -> None:
    """Count parameters of the modules the code builds (meta device), total and activated per k experts."""
    from model.config import get_preset
    from model.params import count_parameters

    try:
        counts = count_parameters(get_preset(preset))
    except ValueError as exc:
        fail(str(exc))
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
