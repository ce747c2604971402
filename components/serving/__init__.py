"""Serving the promoted model: a real-time audio-video conversation on the 1-second chunk protocol.

protocol.py      the messages on the WebSocket, their limits, packets cut from an ingested sample
session.py       one conversation: per-second KV-cached prefill, the answer in text and streamed speech
served_model.py  the registry version the server loads, shared by the sessions under one lock
server.py        FastAPI on 127.0.0.1: /stream (WebSocket), /health, /metadata, the page at /
replay.py        the replay client: a media file as live packets, the answer saved, latency measured
"""

from pathlib import Path

# The demo dataset's sampling (frame rate, resize, audio) cuts files into packets unless another spec is given.
DEMO_SPEC = Path(__file__).resolve().parents[2] / "data_specs" / "datasets" / "demo.yaml"
