"""The contamination check without MLflow: exact and near copies of training files among eval items."""

from __future__ import annotations

import shutil

import ffmpeg
import pytest

from components.evaluation.contamination import ContaminationError, check_contamination
from components.ingest.fingerprint import fingerprint_media
from tests.components.ingest.near_duplicate_media import write_near_duplicate_corpus


@pytest.fixture(scope="module")
def fingerprints(tmp_path_factory) -> dict[str, bytes]:
    if shutil.which("ffmpeg") is None or shutil.which("espeak-ng") is None:
        pytest.skip("ffmpeg and espeak-ng are needed (make system-deps)")
    root = tmp_path_factory.mktemp("contamination")
    write_near_duplicate_corpus(root)
    videos = root / "videos"
    return {
        path.name: fingerprint_media(
            str(path), float(ffmpeg.probe(str(path))["format"]["duration"]), True, True
        ).to_bytes()
        for path in (videos / "clip.mp4", videos / "clip_half.mp4", videos / "mandelbrot.mp4")
    }


def _lineage(rows: list[dict]) -> dict:
    return {"stages": [{"datasets": [{"files": rows}]}]}


def test_a_resized_copy_of_a_training_clip_is_flagged(fingerprints):
    trained = {"path": "raw/clip.mp4", "sha256": "a" * 64, "split": "train", "modality": "video",
               "fingerprint": fingerprints["clip.mp4"]}  # fmt: skip
    held_out = {"path": "raw/mandelbrot.mp4", "sha256": "b" * 64, "split": "eval", "modality": "video",
                "fingerprint": fingerprints["mandelbrot.mp4"]}  # fmt: skip
    items = {"video_qa": [
        {"key": "half", "sha256": "c" * 64, "modality": "video", "fingerprint": fingerprints["clip_half.mp4"]},
        {"key": "other", "sha256": "d" * 64, "modality": "video", "fingerprint": fingerprints["mandelbrot.mp4"]},
        {"key": "same-bytes", "sha256": "a" * 64},  # an older manifest without fingerprints: sha256 only
    ]}  # fmt: skip
    with pytest.raises(ContaminationError) as caught:
        check_contamination(items, _lineage([trained, held_out]))
    found = {(o["key"], o["kind"], o["train_path"]) for o in caught.value.overlaps}
    assert found == {("half", "near", "raw/clip.mp4"), ("same-bytes", "exact", "raw/clip.mp4")}
    assert "near copy of raw/clip.mp4" in str(caught.value)
    # The eval row of the lineage is not training data: its copy is no contamination.
    assert check_contamination({"video_qa": items["video_qa"][1:2]}, _lineage([trained, held_out])) == 1
