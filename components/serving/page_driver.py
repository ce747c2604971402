"""Drive the conversation page (`omnistage serve`'s `/`) in headless Chromium as a user would: choose a file,
type a question, Replay, wait for the spoken answer. The page tests and `omnistage screenshots` call it."""

from __future__ import annotations

import json
from pathlib import Path

from components.headless_chromium import Page, headless_page
from components.specs.dataset import SIDECAR_SUFFIX


def replay_on_page(page: Page, url: str, clip: Path, question: str | None = None, realtime: bool = False,
                   timeout_s: float = 120) -> dict:  # fmt: skip
    """Replay `clip` from the page at `url` and wait for the answer (or an error on the page); what the page
    then shows: `answer`, `log` (the conversation's text), `errors`, `speech_s` (the player's duration),
    `clip_shown` (the clip is on the page beside the answer)."""
    page.open(url + "/")
    page.wait_for("document.getElementById('model').textContent.includes('version')", 30)
    page.choose_file("#file", clip)
    page.evaluate(f"document.getElementById('question').value = {json.dumps(question or '')}")
    page.evaluate(f"document.getElementById('realtime').checked = {json.dumps(realtime)}")
    page.evaluate("document.getElementById('send').click()")
    page.wait_for("document.querySelector('.turn[data-done]') || document.querySelector('.error')", timeout_s)
    errors = page.evaluate("[...document.querySelectorAll('.error')].map((e) => e.textContent)")
    if not errors:  # the answer's speech and the clip are loaded (the player shows their length)
        page.wait_for("((p) => p.readyState >= 1 || p.error)(document.getElementById('player'))", 30)
        clip_loaded = "(c) => !c || c.readyState >= 2 || c.error"  # no clip shown: the caller's check says so
        page.wait_for(f"({clip_loaded})(document.querySelector('.clip'))", 30)
    return {
        "answer": page.evaluate("document.getElementById('answer')?.textContent ?? null"),
        "log": page.evaluate("document.getElementById('log').innerText"),
        "errors": errors,
        "speech_s": page.evaluate("document.getElementById('player').duration || 0"),
        "clip_shown": page.evaluate("!!document.querySelector('.clip')?.src.startsWith('blob:')"),
    }


def conversation_screenshot(model_uri: str, tracking_uri: str, clip: Path, question: str | None, out: Path,
                            clip_at_s: float = 0.0) -> dict:  # fmt: skip
    """The README's picture of a conversation: `model_uri` served on a free port, `clip` replayed from its
    page, the page as it then looks written to `out`, the clip shown at `clip_at_s` (the moment the question
    is about). What the page showed (replay_on_page) is returned."""
    from components.serving.served_model import load_served_model
    from components.serving.server import running_server

    served = load_served_model(model_uri, tracking_uri)
    with running_server(served) as url, headless_page(size="900,820") as page:
        shown = replay_on_page(page, url, clip, question)
        if shown["errors"]:
            raise RuntimeError(f"the page showed an error replaying {clip}: {shown['errors']}")
        if clip_at_s:  # a clip the browser cannot decode (or too short) stays where it is
            page.evaluate(f"""new Promise((done) => {{ const c = document.querySelector('.clip');
                if (c.error || !(c.duration > {clip_at_s})) return done(false);
                c.addEventListener('seeked', () => done(true), {{once: true}}); setTimeout(() => done(false), 5000);
                c.currentTime = {clip_at_s}; }})""")
        # headless Chromium draws its loading spinner over a paused blob video for good: the frame without it
        page.evaluate("document.querySelector('.clip').controls = false")
        page.screenshot(out)
    return shown


def sidecar_question(clip: Path) -> tuple[str | None, float]:
    """The first question in the clip's sidecar labels (`CLIP.labels.json`, as ingestion reads them) and the
    moment to show the clip at: its first beep (what the demo's av_qa questions ask about), else its start."""
    sidecar = clip.with_suffix(SIDECAR_SUFFIX)
    labels = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    beeps = [(s["start_s"] + s["end_s"]) / 2 for s in labels.get("segments", []) if s.get("beep")]
    return (labels.get("qa") or [{}])[0].get("question"), beeps[0] if beeps else 0.0
