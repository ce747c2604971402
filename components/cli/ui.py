"""UI commands: screenshots of what a user opens (MLflow UI, GX Data Docs, the dataset card, the
conversation page)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from components.cli.common import (
    DEFAULT_MODEL_NAME,
    DEFAULT_TRACKING_URI,
    REPO_ROOT,
    WORK,
    ModelName,
    TrackingUri,
    console,
    fail,
)

app = typer.Typer()


@app.command("screenshots")
def screenshots(
    out: Annotated[Path, typer.Option(help="Folder for the PNGs.")] = REPO_ROOT / "docs" / "screenshots",
    model_name: Annotated[str, ModelName] = DEFAULT_MODEL_NAME,
    clip: Annotated[
        Path | None, typer.Option(help="Clip replayed to the champion; default: 1st demo av_qa eval")
    ] = None,
    question: Annotated[
        str | None, typer.Option(help="Question typed with it; default: 1st in CLIP.labels.json")
    ] = None,
    tracking_uri: Annotated[str, TrackingUri] = DEFAULT_TRACKING_URI,
) -> None:
    """Headless-Chromium screenshots of the MLflow UI (run tree, registry), GX Data Docs, the dataset card, and
    the conversation page (`omnistage serve`) answering a clip with the champion."""
    from components.promotion.registry import CHAMPION, alias_version
    from components.serving.page_driver import conversation_screenshot, sidecar_question
    from components.tracking.experiments import local_artifact_root, mlflow_client
    from components.tracking.mlflow_ui import readme_screenshots

    if clip is not None and not clip.is_file():
        fail(f"--clip {clip}: no such file (an audio or video file for the conversation page to replay)")
    out.mkdir(parents=True, exist_ok=True)
    root = local_artifact_root(tracking_uri) or str(WORK / "mlartifacts")
    for path in readme_screenshots(tracking_uri, root, model_name, WORK / "datasets/demo", out):
        console.print(f"wrote {path}")
    clip_given = clip is not None
    clip = clip or next(iter(sorted((WORK / "raw/demo/av_qa/eval").glob("*.m[kp][v4]"))), None)
    if clip is None or alias_version(mlflow_client(tracking_uri), model_name, CHAMPION) is None:
        missing = f"no champion of {model_name} in {tracking_uri}" if clip else "no demo av_qa eval clip"
        if clip_given:
            fail(f"conversation page: {missing} (make run gives one)")
        console.print(f"no conversation page: {missing} (make run gives both)")
        return
    asked, moment = sidecar_question(clip)
    question = question or asked
    try:
        shown = conversation_screenshot(f"models:/{model_name}@{CHAMPION}", tracking_uri, clip, question,
                                        out / "stream-page.png", clip_at_s=moment)  # fmt: skip
    except Exception as exc:  # the page's error, a clip ingestion refuses, no chromium, a page that hangs
        fail(f"conversation page: {exc}")
    console.print(f"wrote {out / 'stream-page.png'}: {clip.name}, {question!r} -> {shown['answer'].strip()!r}")
