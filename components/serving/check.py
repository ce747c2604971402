"""The gate's streaming check: held-out clips replayed through the streaming server, each streamed answer
compared with the offline evaluation's greedy answer for the same clip and question, latency measured.

    report = streaming_check("models:/NAME/3", StreamingCheck(...), {"demo": Path(...)}, tracking_uri)
    report["passed"], report["reasons"], report["items"]

The report is recorded on the model version (`record_streaming_check`: a compact tag the gate reads, the
full report as `gate/streaming-vN.json` in the version's evaluation run) and judged by
components.promotion.gate.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from components.specs.evals import StreamingCheck

STREAMING_TAG = "omnistage.gate.streaming"


def streaming_check(model_uri: str, check: StreamingCheck, datasets: dict[str, Path], tracking_uri: str) -> dict:
    from components.evaluation.items import split_samples
    from components.evaluation.scoring import _greedy, deterministic
    from components.serving.protocol import packets_of_sample
    from components.serving.replay import replay, typed_question
    from components.serving.served_model import load_served_model
    from components.serving.server import running_server
    from components.training.render import Prompt, question_ids, render_prompt

    if check.dataset not in datasets:
        raise ValueError(f"the gate's streaming check reads dataset '{check.dataset}'; given: {sorted(datasets)}")
    served = load_served_model(model_uri, tracking_uri)
    loaded = served.loaded
    items = []
    with deterministic(), running_server(served) as url:
        for family in check.families:
            samples = split_samples(Path(datasets[check.dataset]), family, "eval")[: check.items_per_family]
            if not samples:
                raise ValueError(f"streaming check: no eval clips of family {family} in {datasets[check.dataset]}")
            for sample in samples:
                question = typed_question(sample)
                prompt = render_prompt(sample, loaded.tokenizer, loaded.preset.vit, loaded.preset.audio_encoder)
                asked = question_ids(loaded.tokenizer, family, question) if family != "asr" else []
                offline = _greedy(loaded, Prompt(prompt.ids + asked, prompt.visuals, prompt.audio_features))
                item = {"key": sample["json"]["key"], "family": family, "offline": offline}
                try:
                    result = replay(url, packets_of_sample(sample), family, question)
                except RuntimeError as exc:  # the server refused the clip (e.g. longer than the model's context)
                    items.append(item | {"error": str(exc), "same": False, "time_to_first_audio_ms": None,
                                         "real_time_factor": float("inf")})  # fmt: skip
                    continue
                items.append(item | {"streamed": result.answer_text, "same": result.answer_text == offline,
                                     "time_to_first_audio_ms": result.time_to_first_audio_ms,
                                     "real_time_factor": result.real_time_factor,
                                     "median_prefill_ms": result.median_prefill_ms})  # fmt: skip
    return judge_streaming(check, items)


def judge_streaming(check: StreamingCheck, items: list[dict]) -> dict:
    """The check's verdict from per-clip figures: every clip's answer the same (when required), every clip
    within the latency budgets."""
    reasons = [f"streaming: clip {i['key']} was not answered: {i['error']}" for i in items if i.get("error")]
    answered = [i for i in items if not i.get("error")]  # a refused clip fails on its own reason above
    differ = [i["key"] for i in answered if not i["same"]]
    if check.same_answers and differ:
        reasons.append(f"streaming: {len(differ)} of {len(answered)} streamed answers differ from the offline ones "
                       f"({', '.join(differ[:3])})")  # fmt: skip
    ttfa = [i["time_to_first_audio_ms"] if i["time_to_first_audio_ms"] is not None else float("inf")
            for i in answered] or [float("inf")]  # fmt: skip
    if check.max_time_to_first_audio_ms is not None and max(ttfa) > check.max_time_to_first_audio_ms:
        reasons.append(f"streaming: time to first audio {max(ttfa):.0f} ms over the "
                       f"{check.max_time_to_first_audio_ms:g} ms budget")  # fmt: skip
    rtf = [i["real_time_factor"] for i in answered] or [float("inf")]
    if check.max_real_time_factor is not None and max(rtf) > check.max_real_time_factor:
        reasons.append(f"streaming: real-time factor {max(rtf):.3f} over {check.max_real_time_factor:g}")
    return {"passed": not reasons, "reasons": reasons, "items": items, "same_answers": sum(i["same"] for i in items),
            "num_items": len(items), "max_time_to_first_audio_ms": max(ttfa),
            "median_time_to_first_audio_ms": statistics.median(ttfa), "max_real_time_factor": max(rtf)}  # fmt: skip


def record_streaming_check(client, name: str, version: str, report: dict) -> None:
    summary = {k: v for k, v in report.items() if k != "items"}
    client.set_model_version_tag(name, version, STREAMING_TAG, json.dumps(summary)[:4900])
    eval_run = client.get_model_version(name, version).tags.get("omnistage.eval_run")
    if eval_run:
        client.log_text(eval_run, json.dumps(report, indent=1), f"gate/streaming-v{version}.json")


def recorded_streaming_check(client, name: str, version: str) -> dict | None:
    tag = client.get_model_version(name, version).tags.get(STREAMING_TAG)
    return json.loads(tag) if tag else None
