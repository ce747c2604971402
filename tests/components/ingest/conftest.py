"""Ingest fixtures: legacy-codec files and containers with extra streams, and one local Ray, made once per
session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.components.ingest.codec_media import (
    write_legacy_codec_files,
    write_mkv_with_subtitle_and_attachment,
    write_ogv_with_skeleton,
)


@pytest.fixture(scope="session")
def codec_media(tmp_path_factory) -> tuple[Path, dict[str, tuple[str | None, str | None]]]:
    """A folder of legacy-codec files and extra-stream containers; name -> (video codec, audio codec)."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is needed (make system-deps)")
    folder = tmp_path_factory.mktemp("codec_media")
    codecs = write_legacy_codec_files(folder)
    write_ogv_with_skeleton(folder / "theora_skeleton.ogv")
    write_mkv_with_subtitle_and_attachment(folder / "h264_subtitle_attachment.mkv")
    codecs |= {"theora_skeleton.ogv": ("theora", "vorbis"), "h264_subtitle_attachment.mkv": ("h264", "vorbis")}
    return folder, codecs


@pytest.fixture(scope="session")
def ray_pool():
    """The Ray executor on a Ray started here (2 CPUs, 127.0.0.1), shared by the session: a start costs
    ~10-15 s. Other drivers (an `omnistage ingest` subprocess) join it with `--ray-address ray_pool.address`."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:  # not importorskip: Ray must be imported by the executor
        pytest.skip("ray is not installed")
    from components.ingest.executors import ExecutorConfig, open_executor

    with open_executor(ExecutorConfig(engine="ray"), workers=2) as pool:
        yield pool
    import ray

    assert not ray.is_initialized(), "the Ray this session started was not shut down"
