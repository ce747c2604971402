"""Suite metrics without a model: bootstrap CIs that repeat exactly, the paired difference, the blind-prior
WER baseline, the per-type breakdown and the blanked control of summarise()."""

import pytest

from components.evaluation.baselines import best_constant_transcript
from components.evaluation.metrics import aggregate, bootstrap_ci, paired_delta_ci, word_errors
from components.evaluation.results import summarise
from components.specs.evals import EvalSuiteSpec


def _spec(**kw):
    return EvalSuiteSpec.model_validate(dict(name="qa", family="video_qa", metric="accuracy", chance="uniform",
                                             data={"dataset": "demo"}, min_items=1) | kw)  # fmt: skip


def _items(correct, n=30, kind=None):
    return [{"id": f"k{i}", "correct": float(i < correct), "type": kind} for i in range(n)]


def test_bootstrap_ci_repeats_exactly_and_brackets_the_value():
    items = _items(17)
    first, second = bootstrap_ci("accuracy", items, 1000), bootstrap_ci("accuracy", items, 1000)
    assert first == second
    assert first[0] < aggregate("accuracy", items) < first[1]


def test_corpus_metrics_are_ratios_of_sums():
    assert aggregate("wer", [{"errors": 1, "words": 1}, {"errors": 1, "words": 9}]) == pytest.approx(0.2)
    assert aggregate("perplexity", [{"nll": 2.0, "tokens": 2}]) == pytest.approx(2.718281828)


def test_paired_delta_pairs_by_id_not_by_position():
    champion = _items(20)
    candidate = list(reversed(_items(20)))  # same records, other order: no difference at all
    assert paired_delta_ci("accuracy", candidate, champion, 500) == (0.0, 0.0, 0.0, 30)
    better = _items(25)  # right on 5 more, wrong on none the champion had
    delta, low, high, paired = paired_delta_ci("accuracy", better, champion, 500)
    assert delta == pytest.approx(5 / 30) and 0 < low <= delta <= high and paired == 30
    with pytest.raises(ValueError, match="no items in common"):
        paired_delta_ci("accuracy", [{"id": "x", "correct": 1.0}], champion, 500)


def test_best_constant_transcript_beats_the_empty_one():
    references = ["the cat sat on the mat", "the dog sat on the mat", "a bird flew"]
    train = ["the cat sat on the mat", "hello world", "a bird flew away"]
    transcript, wer = best_constant_transcript(train, references)
    assert transcript == "the cat sat on the mat"
    errors = sum(word_errors(r, transcript)[0] for r in references)
    assert wer == pytest.approx(errors / 15) and wer < 1.0
    assert best_constant_transcript([], references) == ("", 1.0)


def test_summarise_reports_the_blanked_control_and_a_breakdown_per_type():
    items = _items(12, 15, "direction") + [i | {"id": f"c{i['id']}"} for i in _items(3, 15, "colour")]
    blanked = [i | {"correct": 0.0} for i in items]
    result = summarise(_spec(), items, 0.25, blanked)
    assert result.num_items == 30 and result.value == pytest.approx(0.5)
    assert result.blanked.value == 0.0 and result.blanked.delta == pytest.approx(0.5)
    assert result.blanked.delta_ci_low > 0 and result.above_blanked
    assert result.breakdown["direction"]["value"] == pytest.approx(0.8)
    assert result.breakdown["colour"] == result.breakdown["colour"] | {"value": pytest.approx(0.2), "num_items": 15,
                                                                       "blanked": 0.0}  # fmt: skip
    plain = summarise(_spec(), _items(12, 15), 0.25)  # no `type` on the items, no control
    assert plain.breakdown == {} and plain.blanked is None and plain.above_blanked is None


def test_summarise_flags_too_few_items_and_refuses_duplicate_ids():
    assert not summarise(_spec(min_items=50), _items(12), 0.25).enough_items
    with pytest.raises(ValueError, match="not unique"):
        summarise(_spec(), _items(1, 2) + _items(1, 2), 0.25)
