"""Serving commands: `serve` (the streaming server for a registry version) and `stream-replay` (a media
file replayed through it as a live stream)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from components.cli.common import (
    DEFAULT_MODEL_NAME,
    DEFAULT_TRACKING_URI,
    JsonOut,
    TrackingUri,
    console,
    fail,
)
from components.serving import DEMO_SPEC  # the package's __init__ only: no torch or FastAPI

app = typer.Typer()

DEFAULT_SERVED = f"models:/{DEFAULT_MODEL_NAME}@champion"
DEFAULT_PORT = 8765
ServedUri = typer.Option("--model", help="Registry version: models:/NAME@ALIAS or models:/NAME/VERSION.")


def _limits(max_turn_seconds: int, max_tokens: int | None):
    from components.serving.protocol import Limits

    return Limits(max_turn_seconds=max_turn_seconds, max_tokens=max_tokens)


def _load(model: str, tracking_uri: str, limits):
    from components.serving.served_model import load_served_model

    try:
        return load_served_model(model, tracking_uri, limits)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))


@app.command()
def serve(
    model: Annotated[str, ServedUri] = DEFAULT_SERVED,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_PORT,
    host: Annotated[str, typer.Option(help="Address to bind: 127.0.0.1 on a workstation, 0.0.0.0 in a pod "
                                      "(infra/k8s/serving).")] = "127.0.0.1",  # fmt: skip
    public_url: Annotated[str | None, typer.Option(help="Where clients reach it (recorded on the model version); "
                                                   "default http://HOST:PORT.")] = None,  # fmt: skip
    max_turn_seconds: Annotated[int, typer.Option(help="Packets (seconds) one turn may hold.")] = 60,
    spec: Annotated[Path, typer.Option(help="Dataset spec whose sampling cuts files the page uploads.")] = DEMO_SPEC,
    max_tokens: Annotated[int | None, typer.Option(help="A conversation's context (KV cache); by default the "
                                                   "sequence length the model was trained at.")] = None,  # fmt: skip
    tracking_uri: Annotated[str, TrackingUri] = DEFAULT_TRACKING_URI,
) -> None:
    """Serve a registered model on the 1-second streaming protocol: WebSocket /stream, GET /health, /metadata,
    and a page at / (components/serving/protocol.py documents the messages)."""
    from components.serving.served_model import record_endpoint
    from components.serving.server import serve_forever

    served = _load(model, tracking_uri, _limits(max_turn_seconds, max_tokens))
    url = public_url or f"http://{host}:{port}"
    record_endpoint(served, tracking_uri, url)
    console.print(f"serving {model} (version {served.version}) on http://{host}:{port}, as {url}  (Ctrl-C stops)")
    serve_forever(served, spec, port, host)


@app.command("stream-replay")
def stream_replay(
    input: Annotated[Path, typer.Option("--input", help="A video or audio file to replay as a live stream.")],
    model: Annotated[str, ServedUri] = DEFAULT_SERVED,
    port: Annotated[int | None, typer.Option(help="A server already listening on 127.0.0.1:PORT; else one is "
                                             "started and stopped here.")] = None,  # fmt: skip
    task: Annotated[str | None, typer.Option(help="Task family of the request (av_qa, voice_qa, video_qa, asr); "
                                             "by default from the media.")] = None,  # fmt: skip
    question: Annotated[str | None, typer.Option(help="The typed question (tasks that take one).")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for answer.wav, answer.txt and replay.json.")] = None,
    realtime: Annotated[bool, typer.Option(help="One packet per second of wall time, as a camera would.")] = False,
    spec: Annotated[Path, typer.Option(help="Dataset spec whose sampling cuts the packets.")] = DEMO_SPEC,
    tracking_uri: Annotated[str, TrackingUri] = DEFAULT_TRACKING_URI,
    json_out: Annotated[bool, JsonOut] = False,
) -> None:
    """Replay a media file through the streaming server; print the answer and the stream's figures."""
    import contextlib

    from components.serving.protocol import packets_of_sample
    from components.serving.replay import replay, sample_of_file
    from components.serving.server import HOST, running_server

    try:
        packets = packets_of_sample(sample_of_file(input, spec))
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    if port is None:
        server = running_server(_load(model, tracking_uri, None), spec)
    else:
        server = contextlib.nullcontext(f"http://{HOST}:{port}")
    try:
        with server as url:
            result = replay(url, packets, task, question, out, realtime)
    except (RuntimeError, OSError) as exc:
        fail(f"replay through {model}: {exc}")
    if json_out:
        print(json.dumps(result.as_dict(), indent=2))
        return
    console.print(f"answer: {result.answer_text.strip()!r}  ({result.answer_audio_seconds:.2f} s of speech"
                  + (f", {result.answer_wav}" if result.answer_wav else "") + ")")  # fmt: skip
    ttfa = "n/a" if result.time_to_first_audio_ms is None else f"{result.time_to_first_audio_ms:.0f} ms"
    console.print(f"{result.packets} packets, median prefill {result.median_prefill_ms:.1f} ms, time to first "
                  f"audio {ttfa}, real-time factor {result.real_time_factor:.3f}")  # fmt: skip
