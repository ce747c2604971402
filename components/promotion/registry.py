"""Registry moves for promotion, on MLflow model-version aliases (stages are deprecated in MLflow 3).

- `challenger`: the version being judged;
- `champion`: the version in production; moves only when the gate passes;
- `previous-champion`: the champion before the last promotion, what `rollback` returns to.
Every decision is recorded on the version (tags `omnistage.gate.*`) and as `gate/decision-vN.json` in the
version's evaluation run.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from components.evaluation.records import latest_evaluation, latest_evaluation_run, latest_evaluation_with_items
from components.promotion.gate import PROMOTED, REJECTED, Decision, decide
from components.serving.check import recorded_streaming_check
from components.specs.evals import EVALS_DIR, GateSpec, load_suites
from components.tracking.experiments import mlflow_client
from components.tracking.models import parse_models_uri

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"
CHECKPOINT_URI_TAG = "omnistage.checkpoint_uri"  # set by components.tracking.mlflow_stage on published stages


def alias_version(client, name: str, alias: str) -> str | None:
    """The version `alias` points at, or None when the alias (or the model) does not exist."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except Exception:  # alias (or model) does not exist
        return None


def register_candidate(model_uri: str, name: str, tracking_uri: str) -> tuple[str, str]:
    """(name, version) of the candidate; a checkpoint (folder or object-store URI) or runs:/ URI becomes a new
    version of `name`. The version's `source` is the checkpoint's object-store URI when the stage published it
    there (no copy in MLflow), else the run's checkpoint artifacts."""
    from components.tracking.lineage import _run_for

    client = mlflow_client(tracking_uri)
    if model_uri.startswith("models:/"):
        model_name, version, alias = parse_models_uri(model_uri)
        return model_name, str(version or client.get_model_version_by_alias(model_name, alias).version)
    if model_uri.startswith("runs:/"):
        run_id, _, path = model_uri[len("runs:/") :].partition("/")
        run = client.get_run(run_id)
        source = run.data.tags.get(CHECKPOINT_URI_TAG) or f"{run.info.artifact_uri}/{path}".rstrip("/")
    else:
        run, _ = _run_for(client, model_uri)
        source = (
            run.data.tags.get(CHECKPOINT_URI_TAG)
            or f"{run.info.artifact_uri}/checkpoints/step-{run.data.tags['omnistage.steps']}"
        )
    try:
        client.get_registered_model(name)
    except Exception:
        client.create_registered_model(name, description="LongCat-Flash-Omni-family model trained by omnistage")
    version = client.create_model_version(name, source, run_id=run.info.run_id, tags=_provenance_tags(run))
    return name, str(version.version)


def _provenance_tags(run) -> dict[str, str]:
    """What a version came from, on the version itself: the registry page shows it, and `status` reads it
    without loading the stage run (its params and metric history)."""
    data = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
    return {"omnistage.stage": run.data.tags.get("omnistage.stage", ""),
            "omnistage.curriculum_run": run.data.tags.get("mlflow.parentRunId", run.info.run_id),
            "omnistage.data_versions": json.dumps(data, sort_keys=True)}  # fmt: skip


def _suite_facts(gate: GateSpec, evals_dir: Path) -> tuple[dict[str, str], frozenset[str], dict[str, list[str]]]:
    """(suite -> metric name, the suites without media, suite -> its modality_controls) of the suites a gate
    runs."""
    specs = load_suites(evals_dir, gate.suites)
    return ({s.name: s.metric for s in specs}, frozenset(s.name for s in specs if not s.has_media),
            {s.name: list(s.modality_controls) for s in specs})  # fmt: skip


def judge(name: str, version: str, gate: GateSpec, tracking_uri: str, evals_dir: Path = EVALS_DIR) -> Decision:
    """Set `challenger`, decide against the champion from the latest evaluations, record the decision."""
    client = mlflow_client(tracking_uri)
    client.set_registered_model_alias(name, CHALLENGER, version)
    candidate = latest_evaluation_with_items(client, name, version)
    champion_version = alias_version(client, name, CHAMPION)
    champion = None
    if champion_version is not None and champion_version != version:
        champion = latest_evaluation_with_items(client, name, champion_version)
    approved = client.get_model_version(name, version).tags.get("omnistage.approved_by") is not None
    metrics, without_media, controls = _suite_facts(gate, evals_dir)
    streaming = recorded_streaming_check(client, name, version) if gate.streaming else None
    decision = decide(gate, candidate, champion, metrics, approved, without_media, streaming, controls)
    record = decision.to_dict() | {"gate": gate.name, "model": name, "version": version,
                                   "champion_version": champion_version, "decided_at": time.time()}  # fmt: skip
    tags = {"omnistage.gate.name": gate.name, "omnistage.gate.status": decision.status,
            "omnistage.gate.reasons": json.dumps(decision.reasons)[:4900],
            "omnistage.gate.judged_against": champion_version or "none",
            "omnistage.gate.decided_at": f"{record['decided_at']:.3f}"}  # fmt: skip
    if decision.status == REJECTED:
        tags["omnistage.rejected"] = "true"
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    eval_run = client.get_model_version(name, version).tags.get("omnistage.eval_run")
    if eval_run:
        client.log_text(eval_run, json.dumps(record, indent=1), f"gate/decision-v{version}.json")
    return decision


def move_champion(name: str, version: str, tracking_uri: str) -> str | None:
    """Make `version` the champion; the old champion becomes previous-champion. Returns the old one."""
    client = mlflow_client(tracking_uri)
    old = alias_version(client, name, CHAMPION)
    if old == version:
        return old
    if old is not None:
        client.set_registered_model_alias(name, PREVIOUS, old)
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "omnistage.promoted_at", str(time.time()))
    return old


def _judge_and_move(name: str, version: str, gate: GateSpec, tracking_uri: str, evals_dir: Path) -> dict:
    decision = judge(name, version, gate, tracking_uri, evals_dir)
    previous = move_champion(name, version, tracking_uri) if decision.status == PROMOTED else None
    return {"model": name, "version": version, "decision": decision.to_dict(), "previous_champion": previous,
            "champion": alias_version(mlflow_client(tracking_uri), name, CHAMPION)}  # fmt: skip


def promote(model_uri: str, gate: GateSpec, datasets: dict[str, Path], tracking_uri: str,
            evals_dir: Path = EVALS_DIR, evaluate: bool = True) -> dict:  # fmt: skip
    """Register, evaluate (unless already evaluated), judge, and move `champion` when the gate passes."""
    from components.evaluation.evaluate import evaluate_model  # loads torch and the model: only here

    name, version = register_candidate(model_uri, gate.model_name, tracking_uri)
    client = mlflow_client(tracking_uri)
    if evaluate or not latest_evaluation(client, name, version):
        evaluate_model(f"models:/{name}/{version}", datasets, tracking_uri, gate.suites, evals_dir)
    evaluate_champion_on_same_data(name, version, gate, datasets, tracking_uri, evals_dir)
    check_streaming(name, version, gate, datasets, tracking_uri)
    return _judge_and_move(name, version, gate, tracking_uri, evals_dir)


def check_streaming(name: str, version: str, gate: GateSpec, datasets: dict[str, Path], tracking_uri: str) -> None:
    """Run the gate's streaming check on the version and record it there (nothing when the gate has none)."""
    if gate.streaming is None:
        return
    from components.serving.check import record_streaming_check, streaming_check

    report = streaming_check(f"models:/{name}/{version}", gate.streaming, datasets, tracking_uri)
    record_streaming_check(mlflow_client(tracking_uri), name, version, report)


def evaluate_champion_on_same_data(name: str, version: str, gate: GateSpec, datasets: dict[str, Path],
                                   tracking_uri: str, evals_dir: Path = EVALS_DIR) -> None:  # fmt: skip
    """The paired no-regression rule needs the champion scored on the candidate's items: evaluate the
    champion again when its newest evaluation read other data versions, or ran other suites, or predates
    per-item records. A champion whose training data overlaps the new eval items cannot be re-scored
    fairly; the gate then reports that it could not pair the two."""
    from components.evaluation.contamination import ContaminationError
    from components.evaluation.evaluate import evaluate_model

    client = mlflow_client(tracking_uri)
    champion = alias_version(client, name, CHAMPION)
    if gate.no_regression is None or champion in (None, version):
        return
    mine, theirs = latest_evaluation_run(client, name, version), latest_evaluation_run(client, name, champion)
    if theirs is not None:
        same_data = mine.data.tags.get("omnistage.data_versions") == theirs.data.tags.get("omnistage.data_versions")
        suites_done = set(gate.suites) <= set(theirs.data.params.get("suites", "").split(","))
        records = latest_evaluation_with_items(client, name, champion)
        has_items = all("items" in records.get(suite, {}) for suite in gate.suites)
        if same_data and suites_done and has_items:
            return
    try:
        evaluate_model(f"models:/{name}/{champion}", datasets, tracking_uri, gate.suites, evals_dir)
    except ContaminationError as exc:
        log.warning("champion v%s not re-evaluated on the candidate's data: %s", champion, exc)


def approve(name: str, version: str, approver: str, gate: GateSpec, tracking_uri: str,
            evals_dir: Path = EVALS_DIR) -> dict:  # fmt: skip
    """Record a human approval, judge again, promote when everything else passes too."""
    client = mlflow_client(tracking_uri, must_exist=True)
    client.set_model_version_tag(name, version, "omnistage.approved_by", approver)
    client.set_model_version_tag(name, version, "omnistage.approved_at", str(time.time()))
    return _judge_and_move(name, version, gate, tracking_uri, evals_dir)


def rollback(name: str, tracking_uri: str) -> dict:
    """Move `champion` back to `previous-champion` (which is then cleared: a second rollback needs a new one)."""
    client = mlflow_client(tracking_uri, must_exist=True)
    previous, current = alias_version(client, name, PREVIOUS), alias_version(client, name, CHAMPION)
    if previous is None:
        raise ValueError(f"model {name} has no '{PREVIOUS}' alias: nothing to roll back to")
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.delete_registered_model_alias(name, PREVIOUS)
    if current is not None:
        client.set_model_version_tag(name, current, "omnistage.rolled_back_at", str(time.time()))
    return {"model": name, "champion": previous, "demoted": current}


def _version_or_none(tag: str | None) -> str | None:
    return None if tag in (None, "", "none") else tag  # judge() writes "none" when there was no champion


def registry_status(name: str, tracking_uri: str) -> dict:
    """The champion (with the curriculum run and data version it came from, and per suite its newest
    evaluation: value, ci_low, ci_high, chance, blanked, num_items, min_items, higher_is_better) and the
    last gate decision."""
    client = mlflow_client(tracking_uri, must_exist=True)
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except Exception:
        versions = []
    champion = None
    champion_version = alias_version(client, name, CHAMPION) if versions else None
    if champion_version is not None:
        mv = client.get_model_version(name, champion_version)
        tags = mv.tags if "omnistage.data_versions" in mv.tags else _provenance_tags(client.get_run(mv.run_id))
        data = json.loads(tags["omnistage.data_versions"])
        champion = {"name": name, "version": champion_version, "checkpoint": mv.source,
                    "run_id": tags["omnistage.curriculum_run"],
                    "stage_run_id": mv.run_id, "data_version": next(iter(data.values()), None),
                    "data_versions": data, "eval_run_id": mv.tags.get("omnistage.eval_run"),
                    "suites": latest_evaluation(client, name, champion_version)}  # fmt: skip
    decided = [v for v in versions if "omnistage.gate.decided_at" in v.tags]
    last = None
    if decided:
        v = max(decided, key=lambda v: float(v.tags["omnistage.gate.decided_at"]))
        last = {"version": str(v.version), "status": v.tags.get("omnistage.gate.status"),
                "gate": v.tags.get("omnistage.gate.name"),
                "reasons": json.loads(v.tags.get("omnistage.gate.reasons", "[]")),
                "judged_against": _version_or_none(v.tags.get("omnistage.gate.judged_against"))}  # fmt: skip
    aliases = {a: alias_version(client, name, a) for a in (CHAMPION, CHALLENGER, PREVIOUS)} if versions else {}
    return {"model": name, "champion": champion, "last_decision": last, "aliases": aliases}
