"""Shared fixtures: real media from ../shared/media, broken files made on the spot, a tiny demo corpus,
an S3 server on 127.0.0.1 (moto_server) with a fresh bucket per test."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MEDIA = REPO_ROOT.parent / "shared" / "media"
VENV_BIN = REPO_ROOT / ".venv" / "bin"

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def shared_media() -> Path:
    if not SHARED_MEDIA.is_dir():
        pytest.skip("../shared/media is absent")
    return SHARED_MEDIA


def make_broken_files(folder: Path, good_video: Path) -> dict[str, str]:
    """Write one file per kind of bad input; returns file name -> expected reason fragment."""
    from components.demo_data.synth import run_ffmpeg

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero.mp4").write_bytes(b"")
    (folder / "text_renamed.mp4").write_text("this is plain text, not a video\n" * 20)
    data = good_video.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 3])
    # Video that stops early but declares its full duration: a cut WebM keeps its header.
    vp9 = ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"]
    full = run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=s=320x240:r=15:d=12", *vp9], folder / "full.webm")
    (folder / "cut_midway.webm").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    run_ffmpeg(["-f", "lavfi", "-i", "sine=d=2"], folder / "audio_only.mp4")
    tiny = ["-f", "lavfi", "-i", "testsrc2=s=8x8:r=10:d=2", "-c:v", "libx264", "-pix_fmt", "yuv444p"]
    run_ffmpeg(tiny, folder / "tiny_8px.mp4")
    return {
        "zero.mp4": "empty file",
        "text_renamed.mp4": "not a media file",
        "truncated.mp4": "not a media file",
        "cut_midway.webm": "decode error",
        "audio_only.mp4": "audio-only",
        "tiny_8px.mp4": "expectation expect_column_values_to_be_between(width)",
    }


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    if shutil.which("ffmpeg") is None or shutil.which("espeak-ng") is None:
        pytest.skip("ffmpeg and espeak-ng are needed (make system-deps)")
    from components.demo_data.corpus import write_demo_corpus

    out = tmp_path_factory.mktemp("corpus")
    write_demo_corpus(out, seed=3, size="tiny")
    return out


def corpus_spec(corpus: Path, name: str = "tiny", shard_max_bytes: int = 1 << 20, **extra):
    """A dataset spec over a demo corpus, like data_specs/datasets/demo.yaml but with absolute paths."""
    import yaml

    from components.specs.dataset import DatasetSpec

    doc = yaml.safe_load((REPO_ROOT / "data_specs" / "datasets" / "demo.yaml").read_text())
    for source in doc["sources"]:
        source["path"] = str(corpus / Path(source["path"]).name)
    doc.update(name=name, shard_max_bytes=shard_max_bytes, **extra)
    return DatasetSpec.model_validate(doc)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """`moto_server` on 127.0.0.1 for the session; `AWS_ENDPOINT_URL` and dummy credentials are set
    while it runs (tests/s3_server.py)."""
    from tests.s3_server import moto_s3_server

    with moto_s3_server(tmp_path_factory.mktemp("moto") / "moto_server.log") as endpoint:
        yield endpoint


@pytest.fixture()
def s3_bucket(s3_endpoint) -> str:
    """A new, empty bucket for one test: `s3://NAME`."""
    from tests.s3_server import create_bucket

    return create_bucket()


def pytest_collection_modifyitems(config, items):
    """`gpu`-marked tests run only where CUDA is present (none of this project's CI machines)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def single_process():
    """megatron-core parallel state for one process (gloo), torn down after the module."""
    from model.distributed import init_parallel, teardown_parallel

    init_parallel(seed=1234)
    yield
    teardown_parallel()


@pytest.fixture(scope="session")
def tiny_dataset(tiny_corpus, tmp_path_factory) -> Path:
    """The tiny corpus ingested (shards, manifest, stats) with a tokenizer.json trained on it."""
    from components.ingest.pipeline import ingest_dataset
    from components.training.tokenizer_corpus import build_tokenizer

    out = tmp_path_factory.mktemp("tiny_dataset")
    ingest_dataset(corpus_spec(tiny_corpus), out)
    build_tokenizer(out, out / "tokenizer.json", vocab_size=400)
    return out


def copy_migrated_db(template: Path, db: Path) -> None:
    """A test's own database at `db`, copied from a session's migrated template (no state is shared)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, db)


@pytest.fixture(scope="session")
def migrated_mlflow_db(tmp_path_factory) -> Path:
    """An MLflow SQLite tracking DB whose schema is made, once per session: a new DB costs 2-3 s of migrations
    in the first process that opens it. Tests whose subject is not DB creation start from a copy
    (`mlflow_db_copy`)."""
    import mlflow

    db = tmp_path_factory.mktemp("mlflow_migrated") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{db}").search_experiments()  # the first touch creates and migrates the schema
    return db


def mlflow_db_copy(template: Path, db: Path) -> str:
    """A fresh copy of the migrated MLflow DB at `db`; returns its tracking URI."""
    copy_migrated_db(template, db)
    return f"sqlite:///{db}"


TEXT_DATASET_ITEMS = 8


@pytest.fixture(scope="session")
def text_dataset(tmp_path_factory) -> Path:
    """stage0-text's data for the tests that check which process trains which packed row: TEXT_DATASET_ITEMS
    demo text documents (train split) ingested, with a tokenizer.json trained on them.

    Not the tiny corpus: its two train texts (68 and 80 tokens) never fill 97% of a 256-token row, so the
    packer's fallback emits its fullest bin, three copies of the longer text, for the first 9 rows; every row
    then holds the same keys and a process training another process's row goes unseen. Here the first 12
    rows (what those tests train) mix the 8 texts, and the two rows of each global batch of 2 differ.
    """
    import json

    from components.demo_data.corpus import FAMILIES, draw_split
    from components.ingest.pipeline import ingest_dataset
    from components.specs.dataset import SIDECAR_SUFFIX
    from components.training.tokenizer_corpus import build_tokenizer

    root = tmp_path_factory.mktemp("text_dataset")
    raw = root / "raw" / "text"
    raw.mkdir(parents=True)
    text = next(family for family in FAMILIES if family.name == "text")
    for index, params in enumerate(draw_split(text, seed=3, split="train", count=TEXT_DATASET_ITEMS)):
        stem = raw / f"text-train-{index:04d}"
        _, labels = text.render(params, stem, root)
        stem.with_suffix(SIDECAR_SUFFIX).write_text(json.dumps(labels | {"split": "train"}))
    spec = corpus_spec(root / "raw", name="text")
    spec = spec.model_copy(update={"sources": [s for s in spec.sources if s.task_family == "text"]})
    out = root / "dataset"
    ingest_dataset(spec, out)
    build_tokenizer(out, out / "tokenizer.json", vocab_size=400)
    return out


@pytest.fixture()
def data_repo(tmp_path, tiny_corpus):
    """A git repository laid out like this one: specs, the ingestion code, raw data (versioning and DAG tests)."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO_ROOT / "data_specs", repo / "data_specs")
    shutil.copytree(REPO_ROOT / "components", repo / "components", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(tiny_corpus, repo / "raw")
    spec = corpus_spec(repo / "raw", name="tiny")
    spec_path = repo / "data_specs" / "datasets" / "tiny.yaml"
    doc = spec.model_dump(mode="json")
    for source in doc["sources"]:
        source["path"] = "raw/" + source["path"].rsplit("/", 1)[1]
    spec_path.write_text(yaml.safe_dump(doc))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "init"],
        cwd=repo,
        check=True,
    )
    return repo, spec, spec_path
