"""Replay a media file through the streaming server as a live client would: one packet per second, then
the end of the turn; save the spoken answer (wav) and the text, and measure the stream.

The packets are cut by the ingestion code itself (probe, frame sampling by duration, native-resolution
resize, 16 kHz audio, the 1-second layout: components.ingest.samples.build_sample with the dataset spec), so
a file replays as exactly what training saw of it.

Figures (`ReplayResult`):
- `median_prefill_ms`: the server's time to prefill a packet's final second into the KV cache;
- `time_to_first_audio_ms`: from sending `end_of_turn` to receiving the first audio chunk, on the client;
- `real_time_factor`: the server's compute time (every prefill, then the answer from `end_of_turn` to its
  last audio chunk) over the duration it serves (the input's seconds plus the spoken answer's). Below 1:
  the server keeps up with a live conversation.
"""

from __future__ import annotations

import base64
import json
import statistics
import time
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from components.serving.protocol import SAMPLE_RATE, end_of_turn_message, packets_of_sample

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac"}


@dataclass
class ReplayResult:
    packets: int
    median_prefill_ms: float
    time_to_first_audio_ms: float | None
    real_time_factor: float
    answer_text: str
    answer_wav: str | None
    input_seconds: float
    answer_audio_seconds: float
    prefill_ms: list[float] = field(default_factory=list)
    round_trip_ms: list[float] = field(default_factory=list)  # per packet, send to ack, on the client
    interrupted: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def typed_question(sample: dict) -> str | None:
    """The question a client types with this clip: its first QA question, for the families that ask one in
    text (not voice_qa, whose question is spoken, nor asr, whose request is fixed)."""
    from components.training.chat_template import FIXED_REQUEST, SPOKEN_QUESTION

    family = sample["json"].get("task_family")
    if family in FIXED_REQUEST or family in SPOKEN_QUESTION:
        return None
    return (sample["json"]["labels"].get("qa") or [{}])[0].get("question")


def sample_of_file(path: Path, spec_path: Path) -> dict:
    """`path` ingested in memory with the dataset spec: the WebDataset dict training reads."""
    from components.ingest.discover import InputFile
    from components.ingest.probe import probe_input
    from components.ingest.samples import build_sample
    from components.specs.dataset import DatasetSpec, Modality

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file to replay")
    spec = DatasetSpec.load(spec_path)
    modality = Modality.AUDIO if path.suffix.lower() in AUDIO_SUFFIXES else Modality.VIDEO
    probe = probe_input(InputFile("replay", modality, None, str(path), path.name))
    if probe.reason:
        raise ValueError(f"{path}: {probe.reason}")
    built = build_sample(probe, {}, "replay", None, spec)
    return {name[len(built.key) + 1 :]: data for name, data in built.files}


def replay(url: str, packets: list[str], task: str | None = None, question: str | None = None,
           out_dir: Path | None = None, realtime: bool = False, timeout_s: float = 600) -> ReplayResult:  # fmt: skip
    """Send `packets` (protocol messages) to the server at `url` (http://HOST:PORT), end the turn, collect the
    answer. `realtime`: one packet per second of wall time, as a camera would; else as fast as acked."""
    from websockets.sync.client import connect

    prefill, round_trip, chunks = [], [], []
    input_samples = 0
    with connect(url.replace("http://", "ws://") + "/stream", max_size=None, open_timeout=timeout_s) as ws:
        _expect(ws, "ready", timeout_s)
        for packet in packets:
            sent = time.perf_counter()
            ws.send(packet)
            ack = _expect(ws, "ack", timeout_s)
            round_trip.append((time.perf_counter() - sent) * 1000)
            prefill.append(ack["prefill_ms"])
            input_samples += _audio_samples(packet)
            if realtime:
                time.sleep(max(0.0, 1.0 - (time.perf_counter() - sent)))
        turn_end = time.perf_counter()
        ws.send(end_of_turn_message(task, question))
        text = _expect(ws, "text", timeout_s)
        first_audio = None
        while True:
            message = _expect(ws, ("audio", "end_of_answer"), timeout_s)
            if message["type"] == "end_of_answer":
                break
            if first_audio is None:
                first_audio = (time.perf_counter() - turn_end) * 1000
            chunks.append(np.frombuffer(base64.b64decode(message["pcm16"]), "<i2"))
        answer_s = time.perf_counter() - turn_end
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    wav_path = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        wav_path = out_dir / "answer.wav"
        with wave.open(str(wav_path), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(SAMPLE_RATE)
            w.writeframes(audio.astype("<i2").tobytes())
        (out_dir / "answer.txt").write_text(text["text"] + "\n", encoding="utf-8")
    # the input's duration: its audio, or one second per packet for a silent video
    input_s = input_samples / SAMPLE_RATE if input_samples else float(len(packets))
    answer_audio_s = audio.size / SAMPLE_RATE
    compute_s = sum(prefill) / 1000 + answer_s
    result = ReplayResult(
        packets=len(packets), median_prefill_ms=float(statistics.median(prefill)) if prefill else 0.0,
        time_to_first_audio_ms=first_audio, real_time_factor=compute_s / max(input_s + answer_audio_s, 1e-9),
        answer_text=text["text"], answer_wav=str(wav_path) if wav_path else None, input_seconds=input_s,
        answer_audio_seconds=answer_audio_s, prefill_ms=prefill, round_trip_ms=round_trip,
        interrupted=message.get("interrupted", False),
    )  # fmt: skip
    if out_dir is not None:
        (out_dir / "replay.json").write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    return result


def _expect(ws, kinds, timeout_s: float) -> dict:
    kinds = (kinds,) if isinstance(kinds, str) else kinds
    message = json.loads(ws.recv(timeout=timeout_s))
    if message["type"] == "error":
        raise RuntimeError(f"the server refused the stream: {message['message']}")
    if message["type"] not in kinds:
        raise RuntimeError(f"expected {' or '.join(kinds)} from the server, got {message['type']}")
    return message


def _audio_samples(packet: str) -> int:
    audio = json.loads(packet).get("audio")
    return len(base64.b64decode(audio)) // 2 if audio else 0


__all__ = ["ReplayResult", "packets_of_sample", "replay", "sample_of_file", "typed_question"]
