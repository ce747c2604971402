"""Evaluation and registry commands: evaluate, promote, approve, rollback, status, lineage.

`status` and `lineage` only read the MLflow store: they import no torch (tests/components/test_cli.py checks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from components.cli.common import (
    DEFAULT_DATASETS,
    DEFAULT_GATE,
    DEFAULT_MODEL_NAME,
    DEFAULT_TRACKING_URI,
    JsonOut,
    ModelName,
    TrackingUri,
    console,
    fail,
    parse_datasets,
    short_read_gc,
)
from components.specs.loading import SpecError

app = typer.Typer()


@app.command()
def evaluate(
    model: Annotated[str, typer.Option(help="Checkpoint folder, runs:/..., models:/NAME/VERSION or @ALIAS.")],
    suites: Annotated[list[str] | None, typer.Option(help="Suite names (data_specs/evals); all by default.")] = None,
    dataset: Annotated[list[str], typer.Option(help="NAME=DIR of the ingested datasets the suites read.")] = (
        DEFAULT_DATASETS
    ),
    tracking_uri: Annotated[str, TrackingUri] = DEFAULT_TRACKING_URI,
    json_out: Annotated[bool, JsonOut] = False,
) -> None:
    """Score a model on held-out eval suites (bootstrap 95% CIs), after a contamination check."""
    from components.evaluation.contamination import ContaminationError
    from components.evaluation.evaluate import evaluate_model

    try:
        result = evaluate_model(model, parse_datasets(dataset), tracking_uri, suites or None)
    except ContaminationError as exc:
        fail(f"contamination: {exc}")
    except (SpecError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    if json_out:
        print(json.dumps(result.summary(), indent=2))
        return
    from rich.table import Table

    table = Table(title=f"evaluation of {model}")
    for column in ("suite", "metric", "value", "95% CI", "chance", "above chance", "media blanked", "items"):
        table.add_column(column)
    for r in result.results:
        blanked = f"{r.blanked.value:.4g} [{r.blanked.ci_low:.4g}, {r.blanked.ci_high:.4g}]" if r.blanked else "-"
        items = str(r.num_items) if r.enough_items else f"{r.num_items} (< {r.min_items})"
        table.add_row(r.suite, r.metric, f"{r.value:.4g}", f"[{r.ci_low:.4g}, {r.ci_high:.4g}]", f"{r.chance:.4g}",
                      "yes" if r.above_chance else "no", blanked, items)  # fmt: skip
    console.print(table)
    console.print(f"report: {result.report}  (MLflow run {result.run_id})")


def _print_decision(outcome: dict, json_out: bool) -> None:
    if json_out:
        print(json.dumps(outcome, indent=2))
        return
    decision = outcome["decision"]
    colour = {"promoted": "green", "rejected": "red"}.get(decision["status"], "yellow")
    champion = f"v{outcome['champion']}" if outcome["champion"] else "none yet"
    console.print(f"{outcome['model']} v{outcome['version']}: [{colour}]{decision['status']}[/{colour}]"
                  f" -> champion is {champion}")  # fmt: skip
    for rule in decision["rules"]:
        console.print(f"  {'ok  ' if rule['passed'] else 'FAIL'} {rule['rule']:<14} {rule['detail']}")


@app.command()
def promote(
    model: Annotated[str, typer.Option(help="Checkpoint folder, runs:/... or models:/NAME/VERSION.")],
    gate: Annotated[Path, typer.Option(help="Gate YAML (data_specs/gates).")] = DEFAULT_GATE,
    dataset: Annotated[list[str], typer.Option(help="NAME=DIR of the datasets the suites read.")] = DEFAULT_DATASETS,
    tracking_uri: Annotated[str, TrackingUri] = DEFAULT_TRACKING_URI,
    reuse_evaluation: Annotated[bool, typer.Option(help="Use the version's latest evaluation if any.")] = False,
    json_out: Annotated[bool, JsonOut] = False,
) -> None:
    """Register the model, evaluate, judge it with the gate; move `champion` only when every rule passes."""
    from components.evaluation.contamination import ContaminationError
    from components.promotion.registry import promote as run_promote
    from components.specs.evals import GateSpec

    try:
        outcome = run_promote(model, GateSpec.load(gate), parse_datasets(dataset), tracking_uri,
                              evaluate=not reuse_evaluation)  # fmt: skip
    except ContaminationError as exc:
        fail(f"contamination: {exc}")
    except (SpecError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    _print_decision(outcome, json_out)


@app.command()
def approve(
    version: Annotated[str, typer.Argument(help="Model version to approve.")],
    gate: Annotated[Path, typer.Option(help="Gate YAML the version is judged with.")] = DEFAULT_GATE,
    approver: Annotated[str, typer.Option(help="Who approves (recorded on the version).")] = "",
    tracking_uri: Annotated[str, TrackingUri] = DEFAULT_TRACKING_URI,
    json_out: Annotated[bool, JsonOut] = False,
) -> None:
    """Record a human approval for a version awaiting one; it is promoted if every other rule passes."""
    import getpass

    from components.promotion.registry import approve as run_approve
    from components.specs.evals import GateSpec

    try:
        spec = GateSpec.load(gate)
        outcome = run_approve(spec.model_name, version, approver or getpass.getuser(), spec, tracking_uri)
    except (SpecError, ValueError) as exc:
        fail(str(exc))
    _print_decision(outcome, json_out)


@app.command()
def rollback(
    model_name: Annotated[str, ModelName] = DEFAULT_MODEL_NAME,
    tracking_uri: Annotated[str, TrackingUri] = DEFAULT_TRACKING_URI,
) -> None:
    """Move `champion` back to `previous-champion`."""
    from components.promotion.registry import rollback as run_rollback

    try:
        outcome = run_rollback(model_name, tracking_uri)
    except ValueError as exc:
        fail(str(exc))
    demoted = f"v{outcome['demoted']}" if outcome["demoted"] else "none"
    console.print(f"{outcome['model']}: champion {demoted} -> v{outcome['champion']}")


@app.command()
def status(
    model_name: Annotated[str, ModelName] = DEFAULT_MODEL_NAME,
    tracking_uri: Annotated[str, TrackingUri] = DEFAULT_TRACKING_URI,
    json_out: Annotated[bool, JsonOut] = False,
) -> None:
    """The current champion (run, data version) and the last gate decision with its reasons."""
    from components.promotion.registry import registry_status

    short_read_gc()
    try:
        result = registry_status(model_name, tracking_uri)
    except ValueError as exc:
        fail(str(exc))
    if json_out:
        print(json.dumps(result, indent=2))
        return
    champ = result["champion"]
    if champ is None:
        console.print(f"{model_name}: no champion yet (run `make run`, or `omnistage promote`)")
    else:
        console.print(f"champion: {champ['name']} v{champ['version']}  curriculum run {champ['run_id']}  "
                      f"data version {champ['data_version']}")  # fmt: skip
        for suite, r in champ.get("suites", {}).items():
            blanked = f"  blanked {r['blanked']['value']:.4g}" if r.get("blanked") else ""
            chance = f"  chance {r['chance']:.4g}" if r.get("chance") is not None else ""
            console.print(f"  {suite}: {r['value']:.4g} [{r['ci_low']:.4g}, {r['ci_high']:.4g}]{chance}{blanked}"
                          f"  ({r['num_items']} items)")  # fmt: skip
    last = result["last_decision"]
    if last:
        against = f"v{last['judged_against']}" if last["judged_against"] else "no previous champion"
        console.print(f"last gate decision: v{last['version']} {last['status']} (gate {last['gate']}, "
                      f"judged against {against})")  # fmt: skip
        for reason in last["reasons"]:
            console.print(f"  - {reason}")


@app.command()
def lineage(
    target: Annotated[
        str | None, typer.Argument(help="models:/NAME/VERSION, models:/NAME@ALIAS or a checkpoint")
    ] = None,
    input_file: Annotated[str | None, typer.Option(help="Walk forward from a raw file (path or sha256).")] = None,
    tracking_uri: Annotated[str, TrackingUri] = DEFAULT_TRACKING_URI,
) -> None:
    """Walk lineage back (model -> checkpoints -> datasets -> files) or forward (file -> models)."""
    from components.tracking.lineage import lineage_back, lineage_forward

    short_read_gc()
    if (target is None) == (input_file is None):
        fail("give a model/checkpoint to walk back from, or --input-file to walk forward from")
    try:
        result = lineage_forward(input_file, tracking_uri) if input_file else lineage_back(target, tracking_uri)
    except ValueError as exc:
        fail(str(exc))
    print(json.dumps(result, indent=2))
