"""The streaming server on 127.0.0.1 with a real registered model: health and metadata, a replayed clip
answered in text and speech, errors that leave the session alive, barge-in, concurrent sessions kept apart
(the load test: every answer under load equals the clip's answer alone), the page replaying a file and
talking live from Chromium's fake microphone and camera."""

import json
import os
import urllib.request
import wave
from pathlib import Path

import pytest
from websockets.sync.client import connect

from components.serving.protocol import Limits, end_of_turn_message, packets_of_sample
from components.serving.replay import replay
from components.serving.served_model import ServedModel
from components.serving.server import running_server
from tests.conftest import REPO_ROOT

SPEC = REPO_ROOT / "data_specs" / "datasets" / "demo.yaml"
LIMIT = 256 << 10  # above one demo packet (two small JPEGs and a second of audio: ~50 KB as JSON)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(served):
    small = ServedModel(served.loaded, served.uri, served.name, served.version,
                        Limits(max_message_bytes=LIMIT))  # fmt: skip
    with running_server(small, SPEC) as url:
        yield url


def _question(sample):
    return sample["json"]["labels"]["qa"][0]["question"]


def _ws(url):
    ws = connect(url.replace("http://", "ws://") + "/stream", max_size=None)
    assert json.loads(ws.recv(timeout=30))["type"] == "ready"
    return ws


def _turn(ws, packets, task, question=None):
    """Send a turn; the acks, then every message of the answer up to end_of_answer."""
    acks = []
    for packet in packets:
        ws.send(packet)
        acks.append(json.loads(ws.recv(timeout=60)))
    ws.send(end_of_turn_message(task, question))
    answer = []
    while not answer or answer[-1]["type"] != "end_of_answer":
        answer.append(json.loads(ws.recv(timeout=120)))
    return acks, answer


def test_health_and_metadata_name_the_registry_version(server, registered):
    health = json.loads(urllib.request.urlopen(f"{server}/health", timeout=10).read())
    assert health == {"status": "ok", "model": registered["model"], "version": registered["version"]}
    meta = json.loads(urllib.request.urlopen(f"{server}/metadata", timeout=10).read())
    assert meta["limits"]["max_message_bytes"] == LIMIT and meta["protocol"] == 1


def test_replay_answers_in_text_and_speech(server, eval_clips, tmp_path):
    sample = eval_clips["av_qa"]
    result = replay(server, packets_of_sample(sample), "av_qa", _question(sample), out_dir=tmp_path)
    figures = json.loads((tmp_path / "replay.json").read_text())
    for key in ("packets", "median_prefill_ms", "time_to_first_audio_ms", "real_time_factor", "answer_text",
                "answer_wav"):  # fmt: skip
        assert key in figures
    assert figures["packets"] == len(sample["json"]["layout"]) and result.answer_text.strip()
    with wave.open(result.answer_wav) as w:
        assert w.getframerate() == 16000 and w.getnframes() > 0.3 * 16000
    assert 0 < result.real_time_factor and result.time_to_first_audio_ms > 0
    # bytes, not read_text: universal newlines would turn a '\r' an untrained model emits into '\n'
    assert (tmp_path / "answer.txt").read_bytes().decode("utf-8").strip() == result.answer_text.strip()


def test_bad_and_oversize_messages_get_an_error_and_the_session_goes_on(server, eval_clips):
    sample = eval_clips["voice_qa"]
    with _ws(server) as ws:
        ws.send("{not json")
        error = json.loads(ws.recv(timeout=30))
        assert error["type"] == "error" and "not JSON" in error["message"]
        ws.send(json.dumps({"type": "packet", "audio": "A" * (LIMIT + 1)}))
        error = json.loads(ws.recv(timeout=30))
        assert error["type"] == "error" and f"over the {LIMIT}-byte limit" in error["message"]
        acks, answer = _turn(ws, packets_of_sample(sample), "voice_qa")
        assert [a["type"] for a in acks] == ["ack"] * len(acks)
        assert answer[0]["type"] == "text" and answer[-1]["interrupted"] is False


def test_a_packet_while_the_model_speaks_interrupts_it(server, eval_clips):
    sample = eval_clips["voice_qa"]
    packets = packets_of_sample(sample)
    with _ws(server) as ws:
        for packet in packets:
            ws.send(packet)
            json.loads(ws.recv(timeout=60))
        ws.send(end_of_turn_message("voice_qa"))
        ws.send(packets[0])  # the user speaks again before the answer is out
        answer = []
        while not answer or answer[-1]["type"] != "end_of_answer":
            answer.append(json.loads(ws.recv(timeout=120)))
        assert answer[0]["type"] == "text" and answer[-1]["interrupted"] is True
        ack = json.loads(ws.recv(timeout=60))
        assert ack["type"] == "ack" and ack["second"] == 0  # the packet opened the next turn
        _, again = _turn(ws, packets[1:], "voice_qa")  # ... which completes and is answered
        assert again[-1]["type"] == "end_of_answer"


def test_the_page_replays_a_file_and_shows_and_plays_the_answer(server, tiny_corpus, tmp_path):
    from components.headless_chromium import headless_page
    from components.serving.page_driver import replay_on_page

    clip = Path(os.path.relpath(sorted(tiny_corpus.glob("**/eval/av_qa-*.mkv"))[0]))  # as a user types it
    with headless_page() as page:
        shown = replay_on_page(page, server, clip, "Which colour was on screen when the beep sounded?")
        assert shown["errors"] == [] and shown["answer"].strip()
        assert shown["speech_s"] > 0.2 and shown["clip_shown"]  # the answer plays; the clip is beside it
        assert "median prefill" in shown["log"]
        page.screenshot(tmp_path / "page.png")
    assert (tmp_path / "page.png").stat().st_size > 5000


def test_the_page_says_what_went_wrong_when_the_file_cannot_be_sent(server, tiny_corpus, tmp_path):
    from components.headless_chromium import headless_page

    clip = tmp_path / "gone.mkv"
    clip.write_bytes(sorted(tiny_corpus.glob("**/eval/av_qa-*.mkv"))[0].read_bytes())
    with headless_page() as page:
        page.open(server + "/")
        page.choose_file("#file", clip)
        clip.unlink()  # moved away after it was chosen: the browser cannot read it
        page.evaluate("document.getElementById('send').click()")
        page.wait_for("document.querySelector('.error')", 30)
        error = page.evaluate("document.querySelector('.error').textContent")
    assert "could not send gone.mkv to the server" in error, error


def test_concurrent_load_reports_percentiles_and_every_answer_is_as_alone(registered, tiny_dataset):
    from components.bench.stream_load import run_benchmark

    report = run_benchmark(registered["model"], registered["uri"], tiny_dataset, sessions=2, seconds=4,
                           per_family=1)  # fmt: skip
    answered, total = map(int, report["answers_as_alone"].split("/"))
    assert total >= 2 and answered == total == report["turns"]
    assert 0 < report["prefill_ms_p50"] <= report["prefill_ms_p90"] <= report["prefill_ms_p99"]
    assert report["time_to_first_audio_ms_p50"] > 0 and report["packets_per_s"] > 0


# Chromium's fake devices: a beeping microphone and a camera showing a moving test pattern, no prompt
FAKE_MEDIA = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
              "--autoplay-policy=no-user-gesture-required")  # fmt: skip


def test_the_page_talks_live_from_microphone_and_camera(server, registered):
    from components.headless_chromium import headless_page

    capture = json.loads(urllib.request.urlopen(f"{server}/capture?width=640&height=480", timeout=10).read())
    assert capture["fps"] == 2.0 and capture["height"] % 14 == 0 and capture["width"] % 28 == 0
    with headless_page(flags=FAKE_MEDIA) as page:
        page.open(server + "/")
        page.wait_for("document.getElementById('model').textContent.includes('version')", 30)
        page.evaluate("document.getElementById('question').value = 'What colour is on screen?'")
        page.evaluate("document.getElementById('task').value = 'av_qa'")
        page.evaluate("document.getElementById('talk').click()")
        page.wait_for("document.getElementById('live-status').textContent.startsWith('3 s')", 60)
        page.evaluate("document.getElementById('stop').click()")
        page.wait_for("document.querySelector('.turn[data-done]')", 120)
        body = page.evaluate("document.body.innerText")
        assert page.evaluate("document.querySelectorAll('.error').length") == 0, body
        sent = page.evaluate("document.getElementById('live-status').textContent")
        assert int(sent.split(", ")[1].split()[0]) >= 4, sent  # ~2 frames per second of camera
        assert page.evaluate("document.getElementById('answer').textContent").strip()
        assert page.evaluate("document.getElementById('player').src").startswith("blob:")
