"""Every shipped eval suite and gate loads; the settings that cannot work are refused with the field named."""

import pytest

from components.specs.evals import EVALS_DIR, EvalSuiteSpec, GateSpec, load_suites
from tests.conftest import REPO_ROOT

GATES = sorted((REPO_ROOT / "data_specs" / "gates").glob("*.yaml"))


def test_every_shipped_suite_loads_and_asks_for_50_items():
    suites = load_suites(EVALS_DIR)
    assert suites and all(s.min_items >= 50 for s in suites)
    assert {s.name: s.chance for s in suites}["asr"] == "blind_prior"
    assert all(s.choice_scoring == "mean_logprob" for s in suites if s.metric == "accuracy")


@pytest.mark.parametrize("path", GATES, ids=[p.stem for p in GATES])
def test_every_shipped_gate_loads_and_has_teeth(path):
    gate = GateSpec.load(path)
    load_suites(EVALS_DIR, gate.suites)  # every suite it names exists
    assert gate.above_chance == "all" and gate.above_blanked == "all" and gate.require_min_items


def test_refusals_name_the_field():
    base = dict(name="s", family="asr", metric="wer", chance=1.0, data={"dataset": "demo"})
    with pytest.raises(ValueError, match="max_items 10 is below min_items 50"):
        EvalSuiteSpec.model_validate(base | {"max_items": 10})
    with pytest.raises(ValueError, match="'blind_prior'.*is for wer suites"):
        EvalSuiteSpec.model_validate(base | {"metric": "accuracy", "chance": "blind_prior"})
    with pytest.raises(ValueError, match="choice_scoring"):
        EvalSuiteSpec.model_validate(base | {"choice_scoring": "max"})
    with pytest.raises(ValueError, match="above_chance names suites the gate does not run"):
        GateSpec.model_validate(dict(name="g", model_name="m", suites=["text"], above_chance=["image"]))
