"""The 1-second interleaved layout of a sample (REFERENCE.md section 5).

Each chunk holds the frames that fall in that second and that second's audio range, so the model's
tokenizer can emit `second{t}:` + video tokens + audio tokens without looking at the media again.
"""

from __future__ import annotations

import math
from typing import TypedDict


class Chunk(TypedDict):
    second: int
    start_s: float
    end_s: float
    frames: list[int]
    audio: list[int] | None  # [start_sample, end_sample) in the 16 kHz mono track, None without audio


def build_chunk_layout(
    duration_s: float,
    frame_times: list[float],
    num_audio_samples: int | None,
    sample_rate: int,
    chunk_seconds: float = 1.0,
) -> list[Chunk]:
    num_chunks = max(1, math.ceil(round(duration_s / chunk_seconds, 6)))
    chunks: list[Chunk] = []
    for index in range(num_chunks):
        start = index * chunk_seconds
        end = min((index + 1) * chunk_seconds, duration_s) if duration_s > 0 else chunk_seconds
        audio = None
        if num_audio_samples is not None:
            a0 = min(round(start * sample_rate), num_audio_samples)
            a1 = num_audio_samples if index == num_chunks - 1 else min(round(end * sample_rate), num_audio_samples)
            audio = [a0, a1]
        chunks.append(Chunk(second=index, start_s=round(start, 6), end_s=round(end, 6), frames=[], audio=audio))
    for frame_index, t in enumerate(frame_times):
        chunks[min(int(t // chunk_seconds), num_chunks - 1)]["frames"].append(frame_index)
    return chunks
