"""The expectation suite's codec policy: any codec ffmpeg decodes by default, an allow-list only when set."""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from components.ingest.pipeline import ingest_dataset
from components.specs.dataset import DatasetSpec, LimitsSpec, Modality, SourceSpec

ALLOWED_VIDEO = ["h264", "theora"]
ALLOWED_AUDIO = ["vorbis"]


def _spec(folder: Path, **limits) -> DatasetSpec:
    source = SourceSpec(name="input", path=str(folder), modality=Modality.AUTO)
    # The codec files are one testsrc2 second in many codecs: near duplicates of one another by design.
    near_duplicates = {"enabled": False}
    return DatasetSpec(name="codecs", sources=[source], limits=LimitsSpec(**limits), near_duplicates=near_duplicates)


def _quarantine(out: Path) -> dict[str, str]:
    rows = map(json.loads, (out / "quarantine.jsonl").read_text().splitlines())
    return {Path(r["path"]).name: r["reason"] for r in rows}


@pytest.fixture(scope="module")
def default_run(codec_media, tmp_path_factory):
    folder, _ = codec_media
    out = tmp_path_factory.mktemp("codecs_default")
    return out, ingest_dataset(_spec(folder), out)


def test_decodable_legacy_codecs_are_accepted_by_default(codec_media, default_run):
    _, codecs = codec_media
    out, stats = default_run
    assert _quarantine(out) == {}
    assert stats["accepted"] == len(codecs)
    manifest = {r["relpath"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    samples = {
        json.loads(s["json"])["relpath"]: s
        for s in wds.WebDataset([str(p) for p in sorted(out.glob("shards/*.tar"))], shardshuffle=False)
    }
    assert set(samples) == set(codecs)
    for name, (video, audio) in codecs.items():
        sample, streams = samples[name], manifest[name]["streams"]
        frames = sorted(k for k in sample if k.endswith(".jpg"))
        if video:
            assert f"video:{video} " in streams and manifest[name]["modality"] == "video"
            assert frames, name
            pixels = np.asarray(Image.open(io.BytesIO(sample[frames[-1]])))
            assert pixels.std() > 10, name  # the test pattern, not a blank frame
        else:
            assert not frames
        if audio:
            assert f"audio:{audio} " in streams
            with wave.open(io.BytesIO(sample["wav"])) as w:
                assert w.getframerate() == 16000 and abs(w.getnframes() - 16000) < 400, name
        else:
            assert "wav" not in sample


def test_an_explicit_allow_list_quarantines_other_codecs_with_a_clear_reason(codec_media, tmp_path):
    folder, codecs = codec_media
    stats = ingest_dataset(_spec(folder, video_codecs=ALLOWED_VIDEO, audio_codecs=ALLOWED_AUDIO), tmp_path)
    reasons = _quarantine(tmp_path)
    for name, (video, audio) in codecs.items():
        wrong_video, wrong_audio = video not in (None, *ALLOWED_VIDEO), audio not in (None, *ALLOWED_AUDIO)
        assert (name in reasons) == (wrong_video or wrong_audio), name
        if wrong_video:
            assert (
                f"expect_column_values_to_be_in_set(video_codec) failed: value '{video}' "
                f"(value_set={ALLOWED_VIDEO!r} from the spec's limits.video_codecs)"
            ) in reasons[name]
        if wrong_audio:
            assert f"value '{audio}' (value_set={ALLOWED_AUDIO!r} from the spec's limits.audio_codecs)" in reasons[name]
    assert stats["accepted"] == 2  # the Theora .ogv and the H.264 .mkv
