"""The gate's decision table: pass, floor, regression, tie within tolerance, no champion, approval."""

import pytest

from components.promotion.gate import AWAITING, PROMOTED, REJECTED, decide
from components.specs.evals import GateSpec

METRICS = {"acc": "accuracy", "ppl": "perplexity"}


def _gate(**kw):
    base = dict(name="t", model_name="m", suites=["acc", "ppl"], floors={"acc": 0.5, "ppl": 100.0},
                no_regression={"tolerance": {"default": 0.02, "ppl": 5.0}})  # fmt: skip
    return GateSpec.model_validate(base | kw)


def _r(value, low=None, high=None):
    return {"value": value, "ci_low": value if low is None else low, "ci_high": value if high is None else high}


CHAMP = {"acc": _r(0.70, 0.60, 0.80), "ppl": _r(40.0, 35.0, 45.0)}

CASES = [
    # (name, candidate, champion, gate overrides, approved, status, failing rule)
    ("better on both", {"acc": _r(0.80, 0.7, 0.9), "ppl": _r(30.0, 25, 35)}, CHAMP, {}, False, PROMOTED, None),
    ("misses the accuracy floor", {"acc": _r(0.40, 0.3, 0.5), "ppl": _r(30.0)}, None, {}, False, REJECTED, "floor"),
    ("perplexity above its floor", {"acc": _r(0.9), "ppl": _r(150.0)}, None, {}, False, REJECTED, "floor"),
    ("clear regression", {"acc": _r(0.55, 0.50, 0.60), "ppl": _r(40.0)}, CHAMP, {}, False, REJECTED,
     "no_regression"),
    ("worse but CI reaches the champion", {"acc": _r(0.62, 0.50, 0.75), "ppl": _r(40.0)}, CHAMP, {}, False,
     PROMOTED, None),
    ("tie within tolerance", {"acc": _r(0.69), "ppl": _r(44.0)}, CHAMP, {}, False, PROMOTED, None),
    ("perplexity regression beyond tolerance", {"acc": _r(0.7), "ppl": _r(60.0, 50.0, 70.0)}, CHAMP, {}, False,
     REJECTED, "no_regression"),
    ("no champion: floors alone", {"acc": _r(0.51, 0.2, 0.8), "ppl": _r(99.0)}, None, {}, False, PROMOTED, None),
    ("approval missing", {"acc": _r(0.8), "ppl": _r(30.0)}, CHAMP, {"require_approval": True}, False, AWAITING,
     "approval"),
    ("approval given", {"acc": _r(0.8), "ppl": _r(30.0)}, CHAMP, {"require_approval": True}, True, PROMOTED, None),
    ("result missing", {"acc": _r(0.8)}, None, {}, False, REJECTED, "result"),
]  # fmt: skip


@pytest.mark.parametrize("name,candidate,champion,overrides,approved,status,failing", CASES, ids=[c[0] for c in CASES])
def test_gate_decision_table(name, candidate, champion, overrides, approved, status, failing):
    decision = decide(_gate(**overrides), candidate, champion, METRICS, approved)
    assert decision.status == status, decision.to_dict()
    failed = [o.rule for o in decision.outcomes if not o.passed]
    assert failed == ([failing] if failing else [])
    assert decision.passed == (status == PROMOTED)
    if failing:
        assert decision.reasons and all(isinstance(r, str) for r in decision.reasons)


def test_gate_spec_errors_name_the_field():
    with pytest.raises(ValueError, match="floors for suites the gate does not run"):
        _gate(floors={"wer": 0.3})
