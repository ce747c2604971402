"""The gate's streaming check end to end: held-out clips through the server give the offline answers, the
report is recorded on the model version, and judging the version reads it."""

import pytest

from components.serving.check import judge_streaming, record_streaming_check, recorded_streaming_check, streaming_check
from components.specs.evals import GateSpec, StreamingCheck
from components.tracking.experiments import mlflow_client
from tests.components.serving.conftest import MODEL


@pytest.mark.slow
def test_streamed_answers_equal_offline_and_the_gate_reads_the_recorded_check(registered, tiny_dataset):
    from components.promotion.registry import judge

    check = StreamingCheck(families=["av_qa", "voice_qa"], items_per_family=1, max_time_to_first_audio_ms=60000,
                           max_real_time_factor=5.0)  # fmt: skip
    report = streaming_check(f"models:/{MODEL}/{registered['version']}", check, {"demo": tiny_dataset},
                             registered["uri"])  # fmt: skip
    assert report["passed"], report
    assert report["num_items"] == 2 and report["same_answers"] == 2
    assert all(item["streamed"] == item["offline"] for item in report["items"])
    # the same figures judged against a budget no machine meets
    strict = judge_streaming(check.model_copy(update={"max_time_to_first_audio_ms": 0.001}), report["items"])
    assert not strict["passed"] and "over the 0.001 ms budget" in strict["reasons"][0]

    client = mlflow_client(registered["uri"])
    record_streaming_check(client, MODEL, registered["version"], report)
    assert recorded_streaming_check(client, MODEL, registered["version"])["passed"] is True
    gate = GateSpec(name="g", model_name=MODEL, suites=["text"], require_min_items=False, streaming=check)
    decision = judge(MODEL, registered["version"], gate, registered["uri"])
    outcome = next(o for o in decision.outcomes if o.rule == "streaming")
    assert outcome.passed and "2/2 answers as offline" in outcome.detail
