"""Near duplicates: re-encoded, resized and trimmed copies caught with their original, other clips kept,
thresholds honoured, the same duplicates.jsonl with any worker count, and no near pair across the split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from components.ingest.fingerprint import Fingerprint, fingerprint_media
from components.ingest.near_duplicates import NearDuplicateIndex
from components.ingest.pipeline import ingest_dataset
from components.specs.dataset import DatasetSpec, Modality, NearDuplicateSpec, SourceSpec
from tests.components.ingest.near_duplicate_media import write_near_duplicate_corpus


def _spec(root: Path, **extra) -> DatasetSpec:
    sources = [
        SourceSpec(name=kind, path=str(root / kind), modality=modality, labels="none")
        for kind, modality in (("videos", Modality.VIDEO), ("speech", Modality.AUDIO), ("images", Modality.IMAGE))
    ]
    return DatasetSpec(name="near", sources=sources, **extra)


def _duplicates(out: Path) -> dict[str, dict]:
    return {Path(d["path"]).name: d for d in map(json.loads, (out / "duplicates.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if shutil.which("ffmpeg") is None or shutil.which("espeak-ng") is None:
        pytest.skip("ffmpeg and espeak-ng are needed (make system-deps)")
    root = tmp_path_factory.mktemp("near_media")
    copies = write_near_duplicate_corpus(root)
    out = tmp_path_factory.mktemp("near_out")
    stats = ingest_dataset(_spec(root), out)
    return root, copies, out, stats


def test_copies_are_caught_with_their_original_and_other_clips_kept(corpus):
    root, copies, out, stats = corpus
    found = _duplicates(out)
    assert {name: (d["kind"], Path(d["duplicate_of"]).name) for name, d in found.items()} == copies
    assert found["clip_trimmed.mp4"]["offset_s"] == 1.0  # the copy starts 1 s into the original
    assert abs(found["fox_trimmed.wav"]["offset_s"] - 1.0) < 0.05
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    kept = {Path(r["path"]).name for r in manifest}
    # Another pattern, the same pictures with another soundtrack, a sentence one word apart, another picture.
    assert kept == {"clip.mp4", "mandelbrot.mp4", "clip_other_sound.mp4", "fox.wav", "fox_cat.wav",
                    "teacher.wav", "fractal.png", "testcard.png"}  # fmt: skip
    assert stats["duplicates_by_kind"] == {"exact": 1, "near": len(copies) - 1}
    assert stats["accepted"] + stats["quarantined"] + stats["duplicates"] == stats["inputs"]
    keys_in_shards = {m.split(".")[0] for tar in out.glob("shards/*.tar") for m in _members(tar)}
    assert keys_in_shards == {r["key"] for r in manifest}  # copies stay out of the shards
    assert all(Fingerprint.from_bytes(r["fingerprint"]).frame_hashes.size or r["modality"] == "audio" for r in manifest)


def _members(tar: Path) -> list[str]:
    import tarfile

    with tarfile.open(tar) as t:
        return t.getnames()


def test_duplicates_do_not_depend_on_the_worker_count(corpus, tmp_path):
    root, _, out, _ = corpus
    ingest_dataset(_spec(root), tmp_path, workers=2)
    for name in ("duplicates.jsonl", "quarantine.jsonl", "manifest.parquet"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_disabled_matching_keeps_every_copy_but_exact_ones(corpus, tmp_path):
    root, _, _, _ = corpus
    stats = ingest_dataset(_spec(root, near_duplicates={"enabled": False}), tmp_path)
    assert stats["duplicates_by_kind"] == {"exact": 1}
    assert all(r["fingerprint"] is None for r in pq.read_table(tmp_path / "manifest.parquet").to_pylist())


def test_the_eval_copy_of_a_train_clip_is_dropped(corpus, tmp_path):
    """clip.mp4 would be the original (larger), but it is labelled eval and its half-size copy train."""
    root, _, _, _ = corpus
    folder = tmp_path / "videos"
    folder.mkdir()
    for name, split in (("clip.mp4", "eval"), ("clip_half.mp4", "train")):
        shutil.copy(root / "videos" / name, folder / name)
        (folder / name).with_suffix(".labels.json").write_text(json.dumps({"split": split}))
    spec = DatasetSpec(name="split", sources=[SourceSpec(name="v", path=str(folder), modality=Modality.VIDEO)])
    ingest_dataset(spec, tmp_path / "out")
    dropped = _duplicates(tmp_path / "out")["clip.mp4"]
    assert (dropped["kind"], dropped["duplicate_of"]) == ("near", str(folder / "clip_half.mp4"))
    (kept,) = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()
    assert (Path(kept["path"]).name, kept["split"]) == ("clip_half.mp4", "train")


def _fp(path: Path, video: bool = True) -> Fingerprint:
    import ffmpeg

    return fingerprint_media(str(path), float(ffmpeg.probe(str(path))["format"]["duration"]), video, True)


def _matches(modality: str, original: Fingerprint, copy: Fingerprint, **settings) -> bool:
    index = NearDuplicateIndex(modality, NearDuplicateSpec(**settings))
    index.add("original", original)
    return index.find(copy) is not None


def test_each_threshold_is_honoured(corpus):
    root = corpus[0] / "videos"
    clip, vp8, half = _fp(root / "clip.mp4"), _fp(root / "clip_vp8.webm"), _fp(root / "clip_half.mp4")
    assert _matches("video", clip, vp8) and _matches("video", clip, half)
    assert not _matches("video", clip, half, max_colour_difference=0)  # scaling moves cell means a little
    flipped = Fingerprint.from_bytes(clip.to_bytes())
    flipped.frame_hashes ^= np.uint64(0b11110)  # four pHash bits differ in every frame
    assert _matches("video", clip, flipped, max_hamming=4) and not _matches("video", clip, flipped, max_hamming=3)
    speech = corpus[0] / "speech"
    fox, opus = _fp(speech / "fox.wav", False), _fp(speech / "fox_opus.ogg", False)
    assert _matches("audio", fox, opus) and not _matches("audio", fox, opus, max_audio_bit_error_rate=0.02)
    assert not _matches("video", clip, _fp(root / "clip_other_sound.mp4"))  # audio confirms video matches


def _random_frames(rng: np.random.Generator, num: int) -> Fingerprint:
    hashes = rng.integers(0, 2**63, num, dtype=np.uint64)
    colours = rng.integers(0, 256, (num, 48), dtype=np.uint8)
    return Fingerprint(hashes, colours, np.ones(num, bool), np.zeros(0, np.uint32), np.zeros(0, bool))


def test_min_overlap_decides_for_long_clips_that_share_a_stretch():
    """Two 20 s clips whose last / first 5 s are the same footage: one clip only under a 4 s minimum."""
    rng = np.random.default_rng(0)
    a, tail = _random_frames(rng, 40), _random_frames(rng, 30)
    b = Fingerprint(
        np.concatenate([a.frame_hashes[30:], tail.frame_hashes]),
        np.concatenate([a.frame_colours[30:], tail.frame_colours]),
        np.ones(40, bool),
        np.zeros(0, np.uint32),
        np.zeros(0, bool),
    )
    b_fraction_spec = {"min_matching_fraction": 1.0}
    assert _matches("video", a, b, min_overlap_s=4.0, **b_fraction_spec)
    assert not _matches("video", a, b, min_overlap_s=6.0, **b_fraction_spec)
    assert not _matches("video", a, _random_frames(rng, 40))


def test_fingerprints_round_trip_through_bytes(corpus):
    fp = _fp(corpus[0] / "videos" / "clip.mp4")
    again = Fingerprint.from_bytes(fp.to_bytes())
    for field in ("frame_hashes", "frame_colours", "frame_valid", "audio_codes", "audio_valid"):
        assert np.array_equal(getattr(fp, field), getattr(again, field)), field


def test_the_spec_block_is_validated():
    with pytest.raises(ValidationError, match="max_hamming"):
        NearDuplicateSpec(max_hamming=70)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        NearDuplicateSpec(threshold=3)
    with pytest.raises(ValidationError, match="max_audio_bit_error_rate"):
        NearDuplicateSpec(max_audio_bit_error_rate=0.6)
