"""The promotion gate as pure functions: a candidate's suite results, the champion's, a gate spec and
whether a human approved -> a decision with each rule's outcome.

Rules, in order:
- floor (per suite in `floors`): accuracy >= floor, wer / perplexity <= floor, on the point estimate;
- no regression (per suite, when there is a champion with results for it): the candidate may be worse
  than the champion by at most `tolerance`, *judged with the CI*: the rule fails only when even the
  better end of the candidate's 95% CI is worse than champion - tolerance (a regression the data shows,
  not one noise could explain); with no champion this rule is skipped and the floors alone decide;
- approval (when `require_approval`): a recorded human approval.
`missing` results for a suite the gate runs fail that suite's rules.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from components.specs.evals import HIGHER_IS_BETTER, GateSpec

PROMOTED, REJECTED, AWAITING = "promoted", "rejected", "awaiting-approval"


@dataclass(frozen=True)
class RuleOutcome:
    rule: str  # floor | no_regression | approval | result
    suite: str | None
    passed: bool
    detail: str


@dataclass
class Decision:
    status: str  # promoted | rejected | awaiting-approval
    outcomes: list[RuleOutcome] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == PROMOTED

    @property
    def reasons(self) -> list[str]:
        return [o.detail for o in self.outcomes if not o.passed]

    def to_dict(self) -> dict:
        return {"status": self.status, "passed": self.passed, "reasons": self.reasons,
                "rules": [asdict(o) for o in self.outcomes]}  # fmt: skip


def _better_or_equal(a: float, b: float, higher: bool) -> bool:
    return a >= b if higher else a <= b


def decide(gate: GateSpec, candidate: dict[str, dict], champion: dict[str, dict] | None, metrics: dict[str, str],
           approved: bool = False) -> Decision:  # fmt: skip
    """candidate/champion: suite -> {value, ci_low, ci_high}; metrics: suite -> metric name; champion None = none."""
    outcomes: list[RuleOutcome] = []
    for suite in gate.suites:
        result = candidate.get(suite)
        if result is None:
            outcomes.append(RuleOutcome("result", suite, False, f"{suite}: no evaluation result for the candidate"))
            continue
        higher = HIGHER_IS_BETTER[metrics[suite]]
        if suite in gate.floors:
            floor, value = gate.floors[suite], result["value"]
            ok = _better_or_equal(value, floor, higher)
            sign = ">=" if higher else "<="
            outcomes.append(RuleOutcome("floor", suite, ok, f"{suite}: {value:.4g} {'meets' if ok else 'misses'} "
                                        f"the floor ({sign} {floor:g})"))  # fmt: skip
        if champion is not None and gate.no_regression is not None and suite not in champion:
            outcomes.append(RuleOutcome("no_regression", suite, True,
                                        f"{suite}: the champion has no result for it; not judged"))  # fmt: skip
        elif champion is not None and gate.no_regression is not None:
            tol = gate.no_regression.for_suite(suite)
            best_case = result["ci_high"] if higher else result["ci_low"]
            limit = champion[suite]["value"] - tol if higher else champion[suite]["value"] + tol
            ok = _better_or_equal(best_case, limit, higher)
            delta = result["value"] - champion[suite]["value"]
            outcomes.append(RuleOutcome("no_regression", suite, ok,
                                        f"{suite}: delta {delta:+.4g} vs champion {champion[suite]['value']:.4g}; "
                                        f"best end of the candidate's CI {best_case:.4g} "
                                        f"{'is within' if ok else 'is beyond'} tolerance {tol:g}"))  # fmt: skip
    rules_pass = all(o.passed for o in outcomes)
    if gate.require_approval:
        outcomes.append(RuleOutcome("approval", None, approved,
                                    "approved by a reviewer" if approved else "awaiting human approval"))  # fmt: skip
    if not rules_pass:
        return Decision(REJECTED, outcomes)
    if gate.require_approval and not approved:
        return Decision(AWAITING, outcomes)
    return Decision(PROMOTED, outcomes)
