"""`omnistage bench stream`: N concurrent conversations against one streaming server for a bounded time.

Each client replays held-out clips (one per turn, cycling through av_qa, voice_qa and video_qa eval clips)
as fast as the server acknowledges, on its own connection, until the time is up. Reported: per-packet
prefill latency (server side) and round trip (client side) percentiles, time to first audio after the end
of a turn, turns and packets per second, and whether every answer equals the one that clip gets alone (a
session reading another's cache or media would change it). Each turn is its own conversation.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

FAMILIES = ("av_qa", "voice_qa", "video_qa")


def _clips(dataset: Path, per_family: int) -> list[tuple[str, list[str], str | None]]:
    from components.evaluation.items import split_samples
    from components.serving.protocol import packets_of_sample
    from components.serving.replay import typed_question

    clips = [(family, packets_of_sample(sample), typed_question(sample))
             for family in FAMILIES for sample in split_samples(dataset, family, "eval")[:per_family]]  # fmt: skip
    if not clips:
        raise ValueError(f"{dataset}: no eval clips of {FAMILIES}")
    return clips


def _conversation(url: str, clips, stop_at: float, expected: list[str], out: dict) -> None:
    """One client: a conversation per clip, one turn each (so every answer can be compared with the clip's
    answer alone), back to back until `stop_at`; figures appended to `out`."""
    from components.serving.replay import replay

    turn = 0
    while time.monotonic() < stop_at:
        index = turn % len(clips)
        result = replay(url, clips[index][1], clips[index][0], clips[index][2], timeout_s=300)
        out["round_trip_ms"] += result.round_trip_ms
        out["prefill_ms"] += result.prefill_ms
        out["same"].append(result.answer_text == expected[index])
        out["ttfa_ms"].append(result.time_to_first_audio_ms)
        out["turns"] += 1
        turn += 1


def run_benchmark(model_uri: str, tracking_uri: str, dataset: Path, sessions: int, seconds: float,
                  per_family: int = 2) -> dict:  # fmt: skip
    from components.serving.replay import replay
    from components.serving.served_model import load_served_model
    from components.serving.server import running_server

    clips = _clips(dataset, per_family)
    served = load_served_model(model_uri, tracking_uri)
    with running_server(served) as url:
        expected = [replay(url, packets, family, question).answer_text for family, packets, question in clips]
        figures = [{"round_trip_ms": [], "prefill_ms": [], "ttfa_ms": [], "same": [], "turns": 0}
                   for _ in range(sessions)]  # fmt: skip
        started = time.monotonic()
        threads = [threading.Thread(target=_conversation, args=(url, clips[i % len(clips):] + clips[: i % len(clips)],
                                    started + seconds, expected[i % len(clips):] + expected[: i % len(clips)], f))
                   for i, f in enumerate(figures)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started

    def pct(values, q):
        values = [v for v in values if v is not None]
        return round(float(np.percentile(values, q)), 1) if values else None

    merged = {key: [v for f in figures for v in f[key]] for key in ("round_trip_ms", "prefill_ms", "ttfa_ms", "same")}
    turns = sum(f["turns"] for f in figures)
    return {
        "model": model_uri, "sessions": sessions, "seconds": round(elapsed, 1), "turns": turns,
        "packets": len(merged["prefill_ms"]), "turns_per_s": round(turns / elapsed, 3),
        "packets_per_s": round(len(merged["prefill_ms"]) / elapsed, 2),
        **{f"prefill_ms_p{q}": pct(merged["prefill_ms"], q) for q in (50, 90, 99)},
        **{f"round_trip_ms_p{q}": pct(merged["round_trip_ms"], q) for q in (50, 90, 99)},
        **{f"time_to_first_audio_ms_p{q}": pct(merged["ttfa_ms"], q) for q in (50, 90, 99)},
        "answers_as_alone": f"{sum(merged['same'])}/{len(merged['same'])}",
    }  # fmt: skip
