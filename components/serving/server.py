"""The streaming server: FastAPI on 127.0.0.1, one WebSocket per conversation (components.serving.protocol),
`GET /health` (readiness: the model is loaded and warmed up), `GET /metadata`, the browser page at `/`,
`POST /packets?name=FILE` (body: a media file), which cuts the file into protocol packets with the
ingestion code and the dataset spec the server was given (how the page replays a file), and
`GET /capture?width=W&height=H`: the frame rate and frame size a live camera is sampled at.

Every model call runs in a worker thread (the event loop keeps reading the socket, which is how a packet
that arrives while the model speaks is seen: barge-in) and holds the served model's lock.

    with running_server(served, spec, port=0) as url:   # tests and `stream-replay` without --port
        ...
    serve_forever(served, spec, port=8765)              # `omnistage serve`
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

# at the top: FastAPI reads the handlers' annotations (WebSocket) from this module's globals
from fastapi import FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse

from components.local_ports import free_port
from components.serving import DEMO_SPEC
from components.serving.protocol import PROTOCOL_VERSION, EndOfTurn, ProtocolError, parse_message
from components.serving.served_model import ServedModel
from components.serving.session import StreamSession
from model.incremental import ContextFull

PAGE = Path(__file__).with_name("page.html")
HOST = "127.0.0.1"
_session_ids = itertools.count(1)
MAX_UPLOAD_BYTES = 256 << 20


def create_app(served: ServedModel, spec: Path = DEMO_SPEC) -> FastAPI:
    """`spec`: the dataset spec whose sampling cuts uploaded files into packets (POST /packets)."""
    app = FastAPI(title="omnistage stream", docs_url=None, redoc_url=None)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": served.uri, "version": served.version}

    @app.get("/metadata")
    def metadata() -> dict:
        return served.metadata() | {"protocol": PROTOCOL_VERSION}

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text()

    @app.get("/capture")
    def capture(width: int, height: int) -> dict:
        """How a live client samples its camera: the dataset's frame rate, the native-resolution size a
        `width` x `height` camera frame is resized to (components.ingest.sampling, as ingestion does)."""
        from components.ingest.sampling import native_resolution
        from components.specs.dataset import DatasetSpec

        dataset = DatasetSpec.load(spec)
        try:
            w, h = native_resolution(width, height, dataset.resize)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        return {"width": w, "height": h, "fps": dataset.frame_sampling.fps, "sample_rate": served.sample_rate}

    @app.post("/packets")
    async def packets(request: Request, name: str) -> list[str]:
        import tempfile

        from components.serving.protocol import packets_of_sample
        from components.serving.replay import sample_of_file

        body = await request.body()
        if not body or len(body) > MAX_UPLOAD_BYTES:
            raise HTTPException(413 if body else 400, f"send the media file as the body (up to {MAX_UPLOAD_BYTES} "
                                                      f"bytes), got {len(body)}")  # fmt: skip

        def cut() -> list[str]:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / ("upload" + Path(name).suffix.lower())
                path.write_bytes(body)
                return packets_of_sample(sample_of_file(path, spec))

        try:
            return await asyncio.to_thread(cut)
        except (ValueError, FileNotFoundError) as exc:
            raise HTTPException(400, f"{name}: {exc}") from None

    @app.websocket("/stream")
    async def stream(ws: WebSocket) -> None:
        await ws.accept()
        session_id = next(_session_ids)
        session = StreamSession(served)
        inbox: asyncio.Queue = asyncio.Queue()

        async def read() -> None:
            try:
                while True:
                    message = await ws.receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    await inbox.put(message.get("text") or message.get("bytes") or "")
            except WebSocketDisconnect:
                pass
            await inbox.put(None)

        reader = asyncio.create_task(read())
        await ws.send_json({"type": "ready", "session": session_id, **served.metadata()})
        try:
            while (raw := await inbox.get()) is not None:
                try:
                    message = parse_message(raw, served.limits)
                    if isinstance(message, EndOfTurn):
                        await _answer(ws, session, message, inbox)
                    else:
                        done, ms = await asyncio.to_thread(session.add_packet, message)
                        second = len(session.turn.packets) - 1
                        await ws.send_json({"type": "ack", "second": second, "prefilled": done,
                                            "prefill_ms": round(ms, 2)})  # fmt: skip
                except ProtocolError as exc:
                    await ws.send_json({"type": "error", "message": str(exc), "field": exc.field})
                except ContextFull as exc:
                    await ws.send_json({"type": "error", "message": f"{exc}: open a new session", "field": None})
                    await ws.close(code=1009)
                    break
        except WebSocketDisconnect:
            pass
        finally:
            reader.cancel()

    return app


async def _answer(ws, session: StreamSession, end: EndOfTurn, inbox: asyncio.Queue) -> None:
    """Text first, then speech chunk by chunk; a message waiting in the inbox stops the speech (barge-in)
    and is handled next by the caller's loop."""
    turn_end = time.perf_counter()
    answer = await asyncio.to_thread(session.answer, end)
    await ws.send_json({"type": "text", "text": answer.text, "decode_ms": round(answer.decode_ms, 2)})
    chunks = session.speech(answer.text)
    samples, interrupted, first_audio_ms = 0, False, None
    for index in itertools.count():
        if not inbox.empty():
            interrupted = True
            break
        chunk = await asyncio.to_thread(next, chunks, None)
        if chunk is None:
            break
        if first_audio_ms is None:
            first_audio_ms = (time.perf_counter() - turn_end) * 1000
        samples += chunk.size
        await ws.send_json({"type": "audio", "index": index, "sample_rate": session.served.sample_rate,
                            "pcm16": base64.b64encode(chunk.astype("<i2").tobytes()).decode()})  # fmt: skip
    ttfa = None if first_audio_ms is None else round(first_audio_ms, 2)
    await ws.send_json({"type": "end_of_answer", "text": answer.text, "interrupted": interrupted,
                        "audio_seconds": samples / session.served.sample_rate,
                        "time_to_first_audio_ms": ttfa})  # fmt: skip


def _server(served: ServedModel, spec: Path, port: int, host: str = HOST):
    import uvicorn

    # The socket's own frame limit sits above the protocol's, so an oversize message is answered with an
    # error by parse_message instead of a closed connection.
    config = uvicorn.Config(create_app(served, spec), host=host, port=port, log_level="warning", ws="websockets-sansio",
                            ws_max_size=4 * served.limits.max_message_bytes)  # fmt: skip
    return uvicorn.Server(config)


@contextlib.contextmanager
def running_server(served: ServedModel, spec: Path = DEMO_SPEC, port: int = 0) -> Iterator[str]:
    """The server in a background thread on 127.0.0.1 (`port` 0: a free one); yields its base URL and stops
    it on exit."""
    port = port or free_port()
    server = _server(served, spec, port)
    thread = threading.Thread(target=server.run, name="omnistage-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the streaming server did not start on {HOST}:{port}")
        time.sleep(0.05)
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def serve_forever(served: ServedModel, spec: Path, port: int, host: str = HOST) -> None:
    _server(served, spec, port, host).run()
