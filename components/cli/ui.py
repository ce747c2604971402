"""UI commands: screenshots of what a user opens (MLflow UI, GX Data Docs, the dataset card)."""

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
)

app = typer.Typer()


@app.command("screenshots")
def screenshots(
    out: Annotated[Path, typer.Option(help="Folder for the PNGs.")] = REPO_ROOT / "docs" / "screenshots",
    model_name: Annotated[str, ModelName] = DEFAULT_MODEL_NAME,
    tracking_uri: Annotated[str, TrackingUri] = DEFAULT_TRACKING_URI,
) -> None:
    """Headless-Chromium screenshots of the MLflow UI (run tree, registry), GX Data Docs and the dataset card."""
    from components.tracking.experiments import local_artifact_root
    from components.tracking.mlflow_ui import readme_screenshots

    out.mkdir(parents=True, exist_ok=True)
    root = local_artifact_root(tracking_uri) or str(WORK / "mlartifacts")
    for path in readme_screenshots(tracking_uri, root, model_name, WORK / "datasets/demo", out):
        console.print(f"wrote {path}")
