"""What the KFP evaluate / gate / promote components run: string parameters in, library calls."""

from __future__ import annotations

import json
from pathlib import Path

from components.pipelines.stage_entry import follow_pointer
from components.specs.evals import GateSpec
from components.versioning.dataset_cache import local_dataset


def evaluate_step(checkpoint: str, gate: str, datasets: str, tracking_uri: str) -> tuple[str, str]:
    """Register the final checkpoint as a version of the gate's model and evaluate it (and the champion again
    when its evaluation cannot be paired with this one, and the gate's streaming check); (name, version)."""
    from components.evaluation.evaluate import evaluate_model
    from components.promotion.registry import check_streaming, evaluate_champion_on_same_data, register_candidate

    spec = GateSpec.load(gate)
    name, version = register_candidate(str(follow_pointer(Path(checkpoint))), spec.model_name, tracking_uri)
    folders = {k: local_dataset(v) for k, v in json.loads(datasets).items()}  # a folder or NAME@VERSION
    evaluate_model(f"models:/{name}/{version}", folders, tracking_uri, spec.suites)
    evaluate_champion_on_same_data(name, version, spec, folders, tracking_uri)
    check_streaming(name, version, spec, folders, tracking_uri)
    return name, version


def gate_step(name: str, version: str, gate: str, tracking_uri: str) -> str:
    """Judge the version with the gate (records the decision); returns promoted | rejected | awaiting-approval."""
    from components.promotion.registry import judge

    return judge(name, version, GateSpec.load(gate), tracking_uri).status


def promote_step(name: str, version: str, tracking_uri: str) -> str:
    from components.promotion.registry import move_champion

    move_champion(name, version, tracking_uri)
    return version
