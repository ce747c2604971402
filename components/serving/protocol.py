"""The streaming protocol: JSON text messages on one WebSocket per conversation (`/stream`).

Client -> server
    {"type": "packet", "second": 3, "audio": B64, "frames": [B64, ...]}
        One second of the stream, as the training layout samples it (components.ingest): `audio` that
        second's 16 kHz mono audio as 16-bit little-endian PCM (exactly one second, except in a turn's
        last packet; omitted for a silent video), `frames` that second's video frames as JPEG (at the
        dataset's frame rate and native resolution; omitted for audio alone). `second` counts from 0 in
        each turn; it is optional, and when given must be the next one (a lost packet is an error, not a
        shifted stream).
    {"type": "end_of_turn", "task": "av_qa", "question": "Which colour ..."}
        The user stops: the server answers. `task` is a task family of the chat template (the instruction
        the model was trained with: components.training.chat_template); omitted, it is `av_qa` for audio
        and video, `voice_qa` for audio alone, `video_qa` for video alone. `question`: the typed question
        the task takes (none for voice_qa, whose question is spoken, or asr).

Server -> client
    {"type": "ready", "session": ID, "model": URI, "version": V, "limits": {...}}       on connect
    {"type": "ack", "second": t, "prefilled": [s, ...], "prefill_ms": x}                per packet
    {"type": "text", "text": "...", "decode_ms": x}                                     the written answer
    {"type": "audio", "index": k, "sample_rate": 16000, "pcm16": B64}                   spoken answer chunks
    {"type": "end_of_answer", "text": "...", "audio_seconds": x, "interrupted": bool}
    {"type": "error", "message": "...", "field": "..."}     a bad message; the session goes on

A packet that arrives while the server speaks interrupts it (barge-in): the speech stops, the answer's
text stays in the conversation's history, and the packet opens the next turn.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from components.training.chat_template import INSTRUCTIONS

PROTOCOL_VERSION = 1
SAMPLE_RATE = 16000
# Every packet but a turn's last holds exactly one second of audio; the last holds what is left, which
# ingestion's layout lets run a little past the container's duration (components.ingest.layout).
MAX_PACKET_SECONDS = 2


@dataclass(frozen=True)
class Limits:
    """What one session may send. `max_message_bytes`: one JSON message; `max_frames`: frames per packet;
    `max_turn_seconds`: packets per turn; `max_tokens`: the conversation's context (its KV cache), by default
    the sequence length the model was trained at (positions past it were never seen in training)."""

    max_message_bytes: int = 4 << 20
    max_frames: int = 8
    max_turn_seconds: int = 60
    max_tokens: int | None = None

    def as_dict(self) -> dict:
        return {"max_message_bytes": self.max_message_bytes, "max_frames": self.max_frames,
                "max_turn_seconds": self.max_turn_seconds, "max_tokens": self.max_tokens,
                "sample_rate": SAMPLE_RATE}  # fmt: skip


class ProtocolError(ValueError):
    """A message the server cannot use: told to the client, the session survives."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass
class Packet:
    audio: torch.Tensor | None  # float samples in [-1, 1] at 16 kHz
    frames: list[torch.Tensor] = field(default_factory=list)  # [3, H, W] floats in [0, 1]
    second: int | None = None


@dataclass
class EndOfTurn:
    task: str | None = None
    question: str | None = None


def parse_message(text: str | bytes, limits: Limits) -> Packet | EndOfTurn:
    """One client message, checked; a ProtocolError names what is wrong and how to send it."""
    size = len(text)
    if size > limits.max_message_bytes:
        raise ProtocolError(f"message of {size} bytes is over the {limits.max_message_bytes}-byte limit: send one "
                            "second per packet, frames as JPEG")  # fmt: skip
    try:
        message = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(message, dict) or message.get("type") not in ("packet", "end_of_turn"):
        got = message.get("type") if isinstance(message, dict) else type(message).__name__
        raise ProtocolError(f"unknown message type {got!r}: send 'packet' or 'end_of_turn'", "type")
    if message["type"] == "end_of_turn":
        task, question = message.get("task"), message.get("question")
        if task is not None and task not in INSTRUCTIONS:
            raise ProtocolError(f"unknown task {task!r}; one of {sorted(INSTRUCTIONS)}", "task")
        if question is not None and not isinstance(question, str):
            raise ProtocolError("question must be a string", "question")
        return EndOfTurn(task, question or None)
    return _packet(message, limits)


def _packet(message: dict, limits: Limits) -> Packet:
    second = message.get("second")
    if second is not None and (not isinstance(second, int) or second < 0):
        raise ProtocolError(f"second must be a non-negative integer, got {second!r}", "second")
    audio = None
    if message.get("audio"):
        raw = _b64(message["audio"], "audio")
        if len(raw) % 2:
            raise ProtocolError("audio must be 16-bit PCM: an even number of bytes", "audio")
        if len(raw) // 2 > MAX_PACKET_SECONDS * SAMPLE_RATE:
            raise ProtocolError(f"audio holds {len(raw) // 2} samples, more than {MAX_PACKET_SECONDS} s at "
                                f"{SAMPLE_RATE} Hz: send one second per packet", "audio")  # fmt: skip
        audio = torch.from_numpy(np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0)
    frames = message.get("frames") or []
    if not isinstance(frames, list):
        raise ProtocolError("frames must be a list of base64 JPEG images", "frames")
    if len(frames) > limits.max_frames:
        raise ProtocolError(f"{len(frames)} frames in one packet, the limit is {limits.max_frames}", "frames")
    decoded = [_frame(_b64(f, f"frames[{i}]"), i) for i, f in enumerate(frames)]
    if audio is None and not decoded:
        raise ProtocolError("a packet needs audio, frames or both", "audio")
    return Packet(audio, decoded, second)


def _b64(value, where: str) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError(f"{where} must be a base64 string", where)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"{where} is not valid base64", where) from None


def _frame(data: bytes, index: int) -> torch.Tensor:
    """As the training renderer reads a sample's frames (components.training.render._frames)."""
    try:
        image = Image.open(io.BytesIO(data)).convert("RGB")
    except Exception as exc:  # PIL raises several types for undecodable bytes
        raise ProtocolError(f"frames[{index}] is not an image: {exc}", f"frames[{index}]") from None
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)


# ------------------------------------------------------------------------------------------- client side
def packet_message(second: int, audio_pcm16: bytes | None, frames_jpeg: list[bytes]) -> str:
    body: dict = {"type": "packet", "second": second}
    if audio_pcm16:
        body["audio"] = base64.b64encode(audio_pcm16).decode()
    if frames_jpeg:
        body["frames"] = [base64.b64encode(f).decode() for f in frames_jpeg]
    return json.dumps(body)


def end_of_turn_message(task: str | None = None, question: str | None = None) -> str:
    return json.dumps({"type": "end_of_turn", "task": task, "question": question})


def packets_of_sample(sample: dict) -> list[str]:
    """The packets of an ingested sample (a WebDataset dict: `json`, `wav`, `fNNN.jpg`), one per second of
    its layout: what a live client would have sent for that clip."""
    import wave

    meta = sample["json"] if isinstance(sample["json"], dict) else json.loads(sample["json"])
    pcm = b""
    if "wav" in sample:
        with wave.open(io.BytesIO(sample["wav"])) as w:
            if w.getframerate() != SAMPLE_RATE:
                raise ValueError(f"sample {meta.get('key')}: audio at {w.getframerate()} Hz, the stream takes "
                                 f"{SAMPLE_RATE} Hz")  # fmt: skip
            pcm = w.readframes(w.getnframes())
    names = sorted(k for k in sample if k.startswith("f") and k.endswith(".jpg"))
    out = []
    for chunk in meta.get("layout") or []:
        audio = pcm[2 * chunk["audio"][0] : 2 * chunk["audio"][1]] if chunk.get("audio") and pcm else None
        out.append(packet_message(chunk["second"], audio, [sample[names[i]] for i in chunk["frames"]]))
    if not out:
        raise ValueError(f"sample {meta.get('key')} has no 1-second layout (an image or a text): nothing to stream")
    return out
