"""The promotion gate as pure functions: a candidate's suite results, the champion's, a gate spec and
whether a human approved -> a decision with each rule's outcome.

Rules, per suite the gate runs, in order:
- min_items (when `require_min_items`): the suite scored at least its spec's `min_items` items. A suite
  too small to mean anything fails the gate rather than the evaluation: the evaluation still reports
  (useful on a smoke corpus, and its wide CI is honest), but no promotion rests on it;
- floor (per suite in `floors`): accuracy >= floor, wer / perplexity <= floor, on the point estimate;
- above_chance (suites in `above_chance`): the whole 95% CI strictly better than chance (for WER the
  blind prior: the best constant training transcript);
- above_blanked (suites in `above_blanked`; 'all' = every suite with media): the paired 95% CI of
  (score - media-blanked score) on the same items wholly on the better side of 0: the model uses the media;
- above_modality_controls (suites in `above_modality_controls`; 'all' = every suite whose spec has
  `modality_controls`): for each of them, the paired 95% CI of (score - score with that modality alone
  blanked) wholly on the better side of 0: the model uses every stream, not just one of them;
- no_regression (when there is a champion with results for the suite): paired bootstrap of
  (candidate - champion) over the items both evaluations scored (matched by item id); the rule fails
  only when the whole 95% CI of that difference is worse than -tolerance (a regression the data shows,
  not one noise could explain). Needs both evaluations' per-item records; with no champion it is skipped;
- streaming (when the gate has `streaming`): held-out clips replayed through the streaming server gave
  the offline answers within the latency budgets (components.serving.check);
- approval (when `require_approval`): a recorded human approval.
`missing` results for a suite the gate runs fail that suite's rules.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from components.evaluation.metrics import paired_delta_ci
from components.specs.evals import HIGHER_IS_BETTER, GateSpec

PROMOTED, REJECTED, AWAITING = "promoted", "rejected", "awaiting-approval"


@dataclass(frozen=True)
class RuleOutcome:
    rule: str  # result | min_items | floor | above_chance | above_blanked | above_modality_controls | no_regression
    # | streaming | approval
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


def _min_items(suite: str, result: dict) -> RuleOutcome:
    num, least = result.get("num_items"), result.get("min_items")
    if num is None or least is None:
        return RuleOutcome("min_items", suite, False, f"{suite}: the evaluation recorded no item count; re-evaluate")
    ok = num >= least
    return RuleOutcome("min_items", suite, ok, f"{suite}: {num} items {'>=' if ok else '<'} the minimum {least}"
                       + ("" if ok else " (add eval items; the CI of so few says little)"))  # fmt: skip


def _floor(suite: str, result: dict, floor: float, higher: bool) -> RuleOutcome:
    ok = _better_or_equal(result["value"], floor, higher)
    sign = ">=" if higher else "<="
    return RuleOutcome("floor", suite, ok, f"{suite}: {result['value']:.4g} {'meets' if ok else 'misses'} "
                       f"the floor ({sign} {floor:g})")  # fmt: skip


def _above_chance(suite: str, result: dict, higher: bool) -> RuleOutcome:
    chance = result.get("chance")
    if chance is None:
        return RuleOutcome("above_chance", suite, False, f"{suite}: the evaluation recorded no chance; re-evaluate")
    low, high = result["ci_low"], result["ci_high"]
    ok = low > chance if higher else high < chance
    side = "above" if higher else "below"
    return RuleOutcome("above_chance", suite, ok, f"{suite}: 95% CI [{low:.4g}, {high:.4g}] "
                       f"{'is' if ok else 'is not'} strictly {side} chance {chance:.4g}")  # fmt: skip


def _beats_control(rule: str, suite: str, result: dict, control: dict, blanked_what: str,
                   higher: bool) -> RuleOutcome:  # fmt: skip
    """The score against a blanked control: the paired CI of (score - control) wholly on the better side of 0."""
    low, high = control["delta_ci_low"], control["delta_ci_high"]
    ok = low > 0 if higher else high < 0
    return RuleOutcome(rule, suite, ok, f"{suite}: {result['value']:.4g} vs {control['value']:.4g} with "
                       f"{blanked_what} blanked; paired 95% CI of the difference [{low:+.4g}, {high:+.4g}] "
                       f"{'excludes' if ok else 'does not exclude'} no effect")  # fmt: skip


def _above_blanked(suite: str, result: dict, higher: bool) -> RuleOutcome:
    blanked = result.get("blanked")
    if not blanked:
        return RuleOutcome("above_blanked", suite, False, f"{suite}: no media-blanked control was scored "
                           "(set blanked_control: true in its eval spec and re-evaluate)")  # fmt: skip
    return _beats_control("above_blanked", suite, result, blanked, "the media", higher)


def _above_controls(suite: str, result: dict, modalities: list[str], higher: bool) -> list[RuleOutcome]:
    rule = "above_modality_controls"
    if not modalities:
        return [RuleOutcome(rule, suite, False, f"{suite}: its eval spec has no modality_controls (set "
                            "modality_controls: [audio, video] for an audio-visual suite, or drop it from the "
                            "gate's above_modality_controls)")]  # fmt: skip
    outcomes = []
    for modality in modalities:
        control = (result.get("controls") or {}).get(modality)
        if control:
            outcomes.append(_beats_control(rule, suite, result, control, f"the {modality} alone", higher))
        else:
            outcomes.append(RuleOutcome(rule, suite, False, f"{suite}: no {modality}-blanked control was scored; "
                                        "re-evaluate the model with its current eval spec"))  # fmt: skip
    return outcomes


def _no_regression(suite: str, result: dict, champ: dict, metric: str, tolerance: float,
                   samples: int) -> RuleOutcome:  # fmt: skip
    higher = HIGHER_IS_BETTER[metric]
    if not result.get("items") or not champ.get("items"):
        which = "candidate" if not result.get("items") else "champion"
        return RuleOutcome("no_regression", suite, False, f"{suite}: the {which}'s evaluation has no per-item scores "
                           "to pair; re-evaluate it (omnistage evaluate --model models:/NAME/VERSION)")  # fmt: skip
    try:
        delta, low, high, paired = paired_delta_ci(metric, result["items"], champ["items"], samples)
    except ValueError:
        return RuleOutcome("no_regression", suite, False, f"{suite}: the candidate and the champion were scored on "
                           "different items; re-evaluate the champion on the candidate's data")  # fmt: skip
    # better-side end of the difference's CI must not be beyond -tolerance (worse side)
    best = high if higher else low
    ok = best >= -tolerance if higher else best <= tolerance
    return RuleOutcome("no_regression", suite, ok,
                       f"{suite}: candidate - champion {delta:+.4g} over {paired} paired items, 95% CI "
                       f"[{low:+.4g}, {high:+.4g}] {'is within' if ok else 'is wholly beyond'} "
                       f"tolerance {tolerance:g}")  # fmt: skip


def _streaming(report: dict | None) -> RuleOutcome:
    if report is None:
        return RuleOutcome("streaming", None, False, "streaming: the gate asks for a streaming check and none was run")
    detail = (f"streaming: {report['same_answers']}/{report['num_items']} answers as offline, time to first audio "
              f"<= {report['max_time_to_first_audio_ms']:.0f} ms, real-time factor "
              f"<= {report['max_real_time_factor']:.3f}")  # fmt: skip
    return RuleOutcome("streaming", None, report["passed"], "; ".join(report["reasons"]) or detail)


def decide(gate: GateSpec, candidate: dict[str, dict], champion: dict[str, dict] | None, metrics: dict[str, str],
           approved: bool = False, without_media: frozenset[str] = frozenset(),
           streaming: dict | None = None, controls: dict[str, list[str]] | None = None) -> Decision:  # fmt: skip
    """candidate/champion: suite -> record (components.evaluation.records: value, ci_low, ci_high, chance,
    blanked, num_items, min_items, and `items` for the paired bootstrap); champion None = none yet;
    metrics: suite -> metric name; without_media: suites with no media to blank (skipped by above_blanked: all);
    streaming: the candidate's streaming-check report (components.serving.check), None = not run;
    controls: suite -> the modality_controls its eval spec asks for (suites not named: none)."""
    controls = controls or {}
    outcomes: list[RuleOutcome] = []
    if gate.streaming is not None:
        outcomes.append(_streaming(streaming))
    for suite in gate.suites:
        result = candidate.get(suite)
        if result is None:
            outcomes.append(RuleOutcome("result", suite, False, f"{suite}: no evaluation result for the candidate"))
            continue
        higher = HIGHER_IS_BETTER[metrics[suite]]
        if gate.require_min_items:
            outcomes.append(_min_items(suite, result))
        if suite in gate.floors:
            outcomes.append(_floor(suite, result, gate.floors[suite], higher))
        if gate.applies("above_chance", suite):
            outcomes.append(_above_chance(suite, result, higher))
        if gate.applies("above_blanked", suite) and not (gate.above_blanked == "all" and suite in without_media):
            outcomes.append(_above_blanked(suite, result, higher))
        if gate.applies("above_modality_controls", suite) and (
                gate.above_modality_controls != "all" or controls.get(suite)):
            outcomes += _above_controls(suite, result, controls.get(suite, []), higher)
        if champion is None or gate.no_regression is None:
            continue
        if suite not in champion:
            outcomes.append(RuleOutcome("no_regression", suite, True,
                                        f"{suite}: the champion has no result for it; not judged"))  # fmt: skip
        else:
            rule = gate.no_regression
            outcomes.append(_no_regression(suite, result, champion[suite], metrics[suite], rule.for_suite(suite),
                                           rule.bootstrap_samples))  # fmt: skip
    rules_pass = all(o.passed for o in outcomes)
    if gate.require_approval:
        outcomes.append(RuleOutcome("approval", None, approved,
                                    "approved by a reviewer" if approved else "awaiting human approval"))  # fmt: skip
    if not rules_pass:
        return Decision(REJECTED, outcomes)
    if gate.require_approval and not approved:
        return Decision(AWAITING, outcomes)
    return Decision(PROMOTED, outcomes)
