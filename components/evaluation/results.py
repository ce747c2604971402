"""One suite's result, built from per-item records: the interface every suite's scorer meets.

A scorer (components.evaluation.scoring for the text, image, QA and ASR suites; a speech-output scorer
the same way) produces
- `items`: one record per scored item, with an `id` unique in the suite, the fields its metric sums
  (components.evaluation.metrics.METRIC_FIELDS) and optionally a question `type`;
- `chance`: the score of a guesser that ignores the input;
- `blanked_items`: the same items scored with the media blanked (components.evaluation.blanking), or
  None for a suite without media;
- `control_items`: for an audio-visual suite's `modality_controls`, modality -> the same items scored
  with that modality alone blanked;
and `summarise()` turns them into a SuiteResult: the metric, its bootstrap 95% CI, the blanked control
with its CI, the paired CI of (score - blanked), the same for each one-modality control, and a per-type
breakdown. numpy only.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from components.evaluation.metrics import aggregate, bootstrap_ci, paired_delta_ci
from components.specs.evals import EvalSuiteSpec


@dataclass
class Interval:
    value: float
    ci_low: float
    ci_high: float


@dataclass
class BlankedControl:
    """The suite scored with its media blanked, and the paired difference (score - blanked) on the same items."""

    value: float
    ci_low: float
    ci_high: float
    delta: float
    delta_ci_low: float
    delta_ci_high: float


@dataclass
class SuiteResult:
    suite: str
    metric: str
    value: float
    ci_low: float
    ci_high: float
    chance: float
    higher_is_better: bool
    num_items: int
    min_items: int = 1
    blanked: BlankedControl | None = None
    # modality -> the suite scored with that modality alone blanked (the spec's modality_controls)
    controls: dict[str, BlankedControl] = field(default_factory=dict)
    breakdown: dict[str, dict] = field(default_factory=dict)  # question type -> value, CI, num_items, blanked
    items: list[dict] = field(default_factory=list)  # per item: id, key, sha256 and what was scored
    blanked_items: list[dict] = field(default_factory=list)

    @property
    def above_chance(self) -> bool:
        """The whole CI is on the better side of chance."""
        return self.ci_low > self.chance if self.higher_is_better else self.ci_high < self.chance

    @property
    def above_blanked(self) -> bool | None:
        """The whole paired CI of (score - blanked) is on the better side of 0; None without a control."""
        return None if self.blanked is None else self._beats(self.blanked)

    @property
    def above_controls(self) -> dict[str, bool]:
        """Per one-modality control: the whole paired CI of (score - control) on the better side of 0."""
        return {m: self._beats(c) for m, c in self.controls.items()}

    def _beats(self, control: BlankedControl) -> bool:
        return control.delta_ci_low > 0 if self.higher_is_better else control.delta_ci_high < 0

    @property
    def enough_items(self) -> bool:
        return self.num_items >= self.min_items

    def summary(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k not in ("items", "blanked_items")}
        return out | {"above_chance": self.above_chance, "above_blanked": self.above_blanked,
                      "above_controls": self.above_controls, "enough_items": self.enough_items}  # fmt: skip


def _control(metric: str, items: list[dict], control_items: list[dict], samples: int) -> BlankedControl:
    low, high = bootstrap_ci(metric, control_items, samples)
    delta, d_low, d_high, _ = paired_delta_ci(metric, items, control_items, samples)
    return BlankedControl(aggregate(metric, control_items), low, high, delta, d_low, d_high)


def _breakdown(metric: str, items: list[dict], blanked_items: list[dict] | None, samples: int,
               control_items: dict[str, list[dict]]) -> dict[str, dict]:  # fmt: skip
    types = sorted({i["type"] for i in items if i.get("type")})
    out = {}
    for kind in types:
        mine = [i for i in items if i.get("type") == kind]
        low, high = bootstrap_ci(metric, mine, samples)
        out[kind] = {"value": aggregate(metric, mine), "ci_low": low, "ci_high": high, "num_items": len(mine)}
        if blanked_items:
            out[kind]["blanked"] = aggregate(metric, [i for i in blanked_items if i.get("type") == kind])
        for modality, controlled in control_items.items():
            out[kind][f"{modality}_blanked"] = aggregate(metric, [i for i in controlled if i.get("type") == kind])
    return out


def summarise(suite: EvalSuiteSpec, items: list[dict], chance: float, blanked_items: list[dict] | None = None,
              control_items: dict[str, list[dict]] | None = None) -> SuiteResult:  # fmt: skip
    """A SuiteResult from per-item records (see the module docstring)."""
    if not items:
        raise ValueError(f"suite {suite.name}: no eval items of family {suite.family} in the dataset")
    ids = [i["id"] for i in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"suite {suite.name}: item ids are not unique; each record needs its own `id`")
    metric, samples = suite.metric, suite.bootstrap_samples
    low, high = bootstrap_ci(metric, items, samples)
    blanked = _control(metric, items, blanked_items, samples) if blanked_items else None
    control_items = control_items or {}
    controls = {m: _control(metric, items, c, samples) for m, c in control_items.items()}
    return SuiteResult(suite.name, metric, aggregate(metric, items), low, high, float(chance), suite.higher_is_better,
                       len(items), suite.min_items, blanked, controls,
                       _breakdown(metric, items, blanked_items, samples, control_items), items,
                       blanked_items or [])  # fmt: skip


def suite_metrics(results: list[SuiteResult]) -> dict[str, float]:
    """The MLflow metrics of an evaluation run: `SUITE` is the value, `SUITE.FIELD` the rest
    (components.evaluation.records reads them back)."""
    out = {}
    for r in results:
        out |= {r.suite: r.value, f"{r.suite}.ci_low": r.ci_low, f"{r.suite}.ci_high": r.ci_high,
                f"{r.suite}.chance": r.chance, f"{r.suite}.num_items": r.num_items, f"{r.suite}.min_items": r.min_items,
                f"{r.suite}.higher_is_better": float(r.higher_is_better)}  # fmt: skip
        if r.blanked is not None:
            out |= {f"{r.suite}.blanked.{k}": v for k, v in r.blanked.__dict__.items()}
        for modality, control in r.controls.items():
            out |= {f"{r.suite}.{modality}_blanked.{k}": v for k, v in control.__dict__.items()}
        for kind, row in r.breakdown.items():
            name = f"{r.suite}.type.{re.sub(r'[^A-Za-z0-9_]', '_', kind)}"  # MLflow's metric-name alphabet
            out |= {name: row["value"], f"{name}.num_items": row["num_items"]}
    return out


def write_results(results: list[SuiteResult], path: Path) -> None:
    """results.json of an evaluation run: each suite's summary with its per-item records (the gate's paired
    bootstrap against a later candidate reads them back from the registry)."""
    path.write_text(json.dumps([r.summary() | {"items": r.items, "blanked_items": r.blanked_items}
                                for r in results], indent=1))  # fmt: skip
