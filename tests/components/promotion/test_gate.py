"""The gate's decision table: every rule passing and failing, on records built the way an evaluation
writes them (per-item scores -> summarise -> MLflow metrics -> records read back, plus the items)."""

import pytest

from components.evaluation.records import suite_records
from components.evaluation.results import suite_metrics, summarise
from components.promotion.gate import AWAITING, PROMOTED, REJECTED, decide
from components.specs.evals import EvalSuiteSpec, GateSpec

METRICS = {"acc": "accuracy", "ppl": "perplexity"}
WITHOUT_MEDIA = frozenset({"ppl"})
N = 40


def _gate(**kw):
    base = dict(name="t", model_name="m", suites=["acc", "ppl"], floors={"acc": 0.5, "ppl": 100.0},
                above_chance="all", above_blanked="all",
                no_regression={"tolerance": {"default": 0.02, "ppl": 5.0}})  # fmt: skip
    return GateSpec.model_validate(base | kw)


def _spec(name, metric, chance, min_items=N):
    family = "text" if metric == "perplexity" else "video_qa"
    return EvalSuiteSpec(name=name, family=family, metric=metric, chance=chance, min_items=min_items,
                         data={"dataset": "demo"})  # fmt: skip


def _record(spec, items, blanked_items=None, with_items=True):
    """What records.latest_evaluation_with_items returns for one suite of an evaluation."""
    result = summarise(spec, items, float(spec.chance), blanked_items)
    record = suite_records(suite_metrics([result]))[spec.name]
    return record | ({"items": items} if with_items else {})


def _acc(correct, blanked=10, chance=0.25, ids=None, min_items=N, with_items=True, control=True):
    """`correct` of the N items right (the first ones), `blanked` of them right with the media blanked."""
    ids = ids or [f"clip{i}#0" for i in range(N)]
    items = [{"id": k, "correct": float(i < correct)} for i, k in enumerate(ids)]
    blanked_items = [{"id": k, "correct": float(i < blanked)} for i, k in enumerate(ids)] if control else None
    return _record(_spec("acc", "accuracy", chance, min_items), items, blanked_items, with_items)


def _ppl(perplexity):
    import math

    items = [{"id": f"doc{i}", "nll": 10 * math.log(perplexity) * (1 + (i % 3 - 1) * 0.05), "tokens": 10}
             for i in range(N)]  # fmt: skip
    return _record(_spec("ppl", "perplexity", 1000.0), items)


CHAMP = {"acc": _acc(28), "ppl": _ppl(40.0)}
GOOD = {"acc": _acc(32), "ppl": _ppl(30.0)}

CASES = [
    # (name, candidate, champion, gate overrides, approved, status, failing rules)
    ("better on both", GOOD, CHAMP, {}, False, PROMOTED, []),
    ("misses the accuracy floor", {"acc": _acc(18, blanked=2), "ppl": _ppl(30.0)}, None, {}, False, REJECTED,
     ["floor"]),
    ("perplexity above its floor", {"acc": _acc(32), "ppl": _ppl(150.0)}, None, {}, False, REJECTED, ["floor"]),
    ("clear regression on the same items", {"acc": _acc(20, blanked=2), "ppl": _ppl(40.0)}, CHAMP, {}, False,
     REJECTED, ["no_regression"]),
    ("one item lost: within noise", {"acc": _acc(27), "ppl": _ppl(40.0)}, CHAMP, {}, False, PROMOTED, []),
    ("perplexity regression beyond tolerance", {"acc": _acc(28), "ppl": _ppl(60.0)}, CHAMP, {}, False, REJECTED,
     ["no_regression"]),
    ("no champion: no regression rule", GOOD, None, {}, False, PROMOTED, []),
    ("approval missing", GOOD, CHAMP, {"require_approval": True}, False, AWAITING, ["approval"]),
    ("approval given", GOOD, CHAMP, {"require_approval": True}, True, PROMOTED, []),
    ("result missing", {"acc": _acc(32)}, None, {}, False, REJECTED, ["result"]),
    ("too few items", {"acc": _acc(32, min_items=50), "ppl": _ppl(30.0)}, None, {}, False, REJECTED, ["min_items"]),
    ("too few items, rule off", {"acc": _acc(32, min_items=50), "ppl": _ppl(30.0)}, None,
     {"require_min_items": False}, False, PROMOTED, []),
    ("CI reaches chance", {"acc": _acc(26, blanked=2, chance=0.5), "ppl": _ppl(30.0)}, None, {"floors": {}}, False,
     REJECTED, ["above_chance"]),
    ("above chance only where listed", {"acc": _acc(26, blanked=2, chance=0.5), "ppl": _ppl(30.0)}, None,
     {"floors": {}, "above_chance": ["ppl"]}, False, PROMOTED, []),
    ("no better than with the media blanked", {"acc": _acc(32, blanked=31), "ppl": _ppl(30.0)}, None, {}, False,
     REJECTED, ["above_blanked"]),
    ("media suite without a blanked control", {"acc": _acc(32, control=False), "ppl": _ppl(30.0)}, None, {}, False,
     REJECTED, ["above_blanked"]),
    ("champion without per-item scores", GOOD, {"acc": _acc(28, with_items=False), "ppl": _ppl(40.0)}, {}, False,
     REJECTED, ["no_regression"]),
    ("champion scored other items", {"acc": _acc(32, ids=[f"new{i}" for i in range(N)]), "ppl": _ppl(30.0)}, CHAMP,
     {}, False, REJECTED, ["no_regression"]),
]  # fmt: skip


@pytest.mark.parametrize("name,candidate,champion,overrides,approved,status,failing", CASES, ids=[c[0] for c in CASES])
def test_gate_decision_table(name, candidate, champion, overrides, approved, status, failing):
    decision = decide(_gate(**overrides), candidate, champion, METRICS, approved, WITHOUT_MEDIA)
    assert decision.status == status, decision.to_dict()
    assert [o.rule for o in decision.outcomes if not o.passed] == failing, decision.to_dict()
    assert decision.passed == (status == PROMOTED)
    if failing:
        assert decision.reasons and all(isinstance(r, str) for r in decision.reasons)


def test_every_rule_is_judged_for_every_suite_it_names():
    decision = decide(_gate(), GOOD, CHAMP, METRICS, False, WITHOUT_MEDIA)
    judged = {(o.rule, o.suite) for o in decision.outcomes}
    assert judged == {("min_items", "acc"), ("floor", "acc"), ("above_chance", "acc"), ("above_blanked", "acc"),
                      ("no_regression", "acc"), ("min_items", "ppl"), ("floor", "ppl"), ("above_chance", "ppl"),
                      ("no_regression", "ppl")}  # text has no media: above_blanked 'all' skips it  # fmt: skip


def test_old_point_comparison_would_have_missed_this_paired_regression():
    """The candidate's CI reaches the champion's value (the old rule passed it), yet on the same items it is
    wrong on 6 the champion got right and right on none the champion missed: a regression the pairing shows."""
    candidate, champion = _acc(22, blanked=2), _acc(28)
    assert candidate["ci_high"] >= champion["value"] - 0.02
    gate = _gate(suites=["acc"], floors={}, no_regression={"tolerance": {"default": 0.02}})
    decision = decide(gate, {"acc": candidate}, {"acc": champion}, METRICS)
    assert [o.rule for o in decision.outcomes if not o.passed] == ["no_regression"]


def test_gate_spec_errors_name_the_field():
    with pytest.raises(ValueError, match="floors for suites the gate does not run"):
        _gate(floors={"wer": 0.3})
    with pytest.raises(ValueError, match="above_blanked names suites the gate does not run"):
        _gate(above_blanked=["asr"])


STREAMING = {"families": ["av_qa", "voice_qa"], "max_time_to_first_audio_ms": 1000, "max_real_time_factor": 1.0}


def _streamed(same=(True, True), ttfa=(300.0, 450.0), rtf=(0.2, 0.3), error=None):
    """The streaming check's report (components.serving.check) from per-clip figures; `error`: the server
    refused the last clip."""
    from components.serving.check import judge_streaming
    from components.specs.evals import StreamingCheck

    items = [{"key": f"clip{i}", "same": s, "time_to_first_audio_ms": t, "real_time_factor": r}
             for i, (s, t, r) in enumerate(zip(same, ttfa, rtf))]  # fmt: skip
    if error:
        items[-1] |= {"error": error, "same": False, "time_to_first_audio_ms": None, "real_time_factor": float("inf")}
    return judge_streaming(StreamingCheck.model_validate(STREAMING), items)


STREAM_CASES = [
    ("streams the offline answers within budget", _streamed(), PROMOTED, []),
    ("a streamed answer differs", _streamed(same=(True, False)), REJECTED, ["streaming"]),
    ("time to first audio over budget", _streamed(ttfa=(300.0, 1500.0)), REJECTED, ["streaming"]),
    ("no audio at all", _streamed(ttfa=(300.0, None)), REJECTED, ["streaming"]),
    ("slower than real time", _streamed(rtf=(0.2, 1.4)), REJECTED, ["streaming"]),
    ("the server refused a clip", _streamed(error="longer than the context"), REJECTED, ["streaming"]),
    ("check not run", None, REJECTED, ["streaming"]),
]


@pytest.mark.parametrize("name,report,status,failing", STREAM_CASES, ids=[c[0] for c in STREAM_CASES])
def test_gate_streaming_rule(name, report, status, failing):
    decision = decide(_gate(streaming=STREAMING), GOOD, CHAMP, METRICS, False, WITHOUT_MEDIA, report)
    assert decision.status == status, decision.to_dict()
    assert [o.rule for o in decision.outcomes if not o.passed] == failing, decision.to_dict()
    if report is not None and failing:
        assert decision.reasons == ["; ".join(report["reasons"])]


def test_same_answers_false_judges_latency_only():
    from components.serving.check import judge_streaming
    from components.specs.evals import StreamingCheck

    items = [{"key": "clip0", "same": False, "time_to_first_audio_ms": 300.0, "real_time_factor": 0.2}]
    lenient = judge_streaming(StreamingCheck.model_validate(STREAMING | {"same_answers": False}), items)
    assert lenient["passed"] and lenient["same_answers"] == 0
    assert not judge_streaming(StreamingCheck.model_validate(STREAMING), items)["passed"]


def test_a_gate_without_streaming_ignores_the_report():
    decision = decide(_gate(), GOOD, CHAMP, METRICS, False, WITHOUT_MEDIA, _streamed(same=(False, False)))
    assert decision.status == PROMOTED and "streaming" not in {o.rule for o in decision.outcomes}


def _av(correct, audio_blanked, video_blanked, controls=True):
    """An audio-visual suite's record: `correct` of N right, and right with the audio / the video alone blanked."""
    spec = EvalSuiteSpec(name="av", family="av_qa", metric="accuracy", chance=0.25, min_items=N,
                         data={"dataset": "demo"}, modality_controls=["audio", "video"])  # fmt: skip
    ids = [f"clip{i}#0" for i in range(N)]

    def right(k):
        return [{"id": x, "correct": float(i < k)} for i, x in enumerate(ids)]

    control_items = {"audio": right(audio_blanked), "video": right(video_blanked)} if controls else None
    result = summarise(spec, right(correct), 0.25, right(2), control_items)
    return suite_records(suite_metrics([result]))["av"] | {"items": right(correct)}


AV_CASES = [
    # (name, candidate record, the spec's modality_controls, gate's above_modality_controls, status, failing)
    ("uses both streams", _av(32, 12, 10), ["audio", "video"], "all", PROMOTED, []),
    ("reads the video only", _av(32, 31, 10), ["audio", "video"], "all", REJECTED, ["above_modality_controls"]),
    ("reads neither beyond the other", _av(32, 31, 31), ["audio", "video"], ["av"], REJECTED,
     ["above_modality_controls", "above_modality_controls"]),
    ("controls not scored", _av(32, 0, 0, controls=False), ["audio", "video"], "all", REJECTED,
     ["above_modality_controls", "above_modality_controls"]),
    ("named, but its spec asks for none", _av(32, 31, 31), [], ["av"], REJECTED, ["above_modality_controls"]),
    ("'all' skips a suite whose spec asks for none", _av(32, 31, 31), [], "all", PROMOTED, []),
    ("rule off", _av(32, 31, 31), ["audio", "video"], [], PROMOTED, []),
]  # fmt: skip


@pytest.mark.parametrize("name,record,spec_controls,listed,status,failing", AV_CASES, ids=[c[0] for c in AV_CASES])
def test_gate_modality_controls_rule(name, record, spec_controls, listed, status, failing):
    gate = GateSpec(name="t", model_name="m", suites=["av"], above_chance="all", above_blanked="all",
                    above_modality_controls=listed)  # fmt: skip
    decision = decide(gate, {"av": record}, None, {"av": "accuracy"}, False, frozenset(), None, {"av": spec_controls})
    assert decision.status == status, decision.to_dict()
    assert [o.rule for o in decision.outcomes if not o.passed] == failing, decision.to_dict()
    for outcome in decision.outcomes:
        if outcome.rule == "above_modality_controls" and not outcome.passed:
            assert "av:" in outcome.detail and ("blanked" in outcome.detail or "modality_controls" in outcome.detail)


def test_modality_controls_are_recorded_and_read_back():
    record = _av(32, 12, 31)
    assert set(record["controls"]) == {"audio", "video"}
    assert record["controls"]["audio"]["value"] == pytest.approx(12 / N)
    assert record["controls"]["video"]["delta"] == pytest.approx(1 / N)
    assert record["controls"]["audio"]["delta_ci_low"] > 0 >= record["controls"]["video"]["delta_ci_low"]


def test_modality_controls_spec_errors_name_the_field():
    with pytest.raises(ValueError, match="modality_controls .* family video_qa does not carry both audio and video"):
        EvalSuiteSpec(name="v", family="video_qa", metric="accuracy", chance="uniform", data={"dataset": "demo"},
                      modality_controls=["audio"])  # fmt: skip
    with pytest.raises(ValueError, match="lists a modality twice"):
        EvalSuiteSpec(name="v", family="av_qa", metric="accuracy", chance="uniform", data={"dataset": "demo"},
                      modality_controls=["audio", "audio"])  # fmt: skip
    with pytest.raises(ValueError, match="above_modality_controls names suites the gate does not run"):
        _gate(above_modality_controls=["asr"])
