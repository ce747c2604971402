"""End-to-end ingestion on real and broken files: nothing lost, clear reasons, determinism, resume."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from components.ingest.executors import ExecutorConfig
from components.ingest.pipeline import ingest_dataset
from components.specs.dataset import DatasetSpec, Modality, SourceSpec
from tests.conftest import REPO_ROOT, VENV_BIN, corpus_spec, make_broken_files


def _digests(out: Path) -> dict[str, str]:
    reports = [out / "manifest.parquet", out / "quarantine.jsonl", out / "duplicates.jsonl"]
    files = sorted(out.glob("shards/*.tar")) + reports
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


@pytest.fixture(scope="module")
def mixed_batch(tmp_path_factory, shared_media):
    """Real media (any modality), a duplicate, and every kind of broken file in a video-only source."""
    root = tmp_path_factory.mktemp("mixed")
    shutil.copytree(shared_media, root / "real")
    shutil.copy(shared_media / "video" / "lego.mp4", root / "real" / "lego_copy.mp4")
    expected = make_broken_files(root / "broken", shared_media / "video" / "lego.mp4")
    out = tmp_path_factory.mktemp("mixed_out")
    stats = ingest_dataset(_mixed_spec(root), out)
    return root, out, stats, expected


def _mixed_spec(root: Path) -> DatasetSpec:
    return DatasetSpec(
        name="mixed",
        sources=[
            SourceSpec(name="real", path=str(root / "real"), modality=Modality.AUTO),
            SourceSpec(name="broken", path=str(root / "broken"), modality=Modality.VIDEO),
        ],
    )


def test_nothing_is_lost(mixed_batch):
    root, out, stats, _ = mixed_batch
    inputs = [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".labels.json")]
    assert stats["inputs"] == len(inputs)
    assert stats["accepted"] + stats["quarantined"] + stats["duplicates"] == stats["inputs"]
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    quarantine = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    duplicates = [json.loads(line) for line in (out / "duplicates.jsonl").read_text().splitlines()]
    placed = [r["path"] for r in manifest] + [q["path"] for q in quarantine] + [d["path"] for d in duplicates]
    assert sorted(placed) == sorted(str(p) for p in inputs)  # each input in exactly one place
    # lego.mp4 is byte-identical to lego_copy.mp4; lego.mov/.ogv/.webm are the same real camera clip in
    # other containers and codecs (h264, theora, vp8): near duplicates of the one that is kept.
    found = {Path(d["path"]).name: (d["kind"], Path(d["duplicate_of"]).name) for d in duplicates}
    near = ("near", "lego_copy.mp4")
    assert found == {"lego.mp4": ("exact", "lego_copy.mp4"), "lego.mov": near, "lego.ogv": near, "lego.webm": near}
    assert stats["duplicates_by_kind"] == {"exact": 1, "near": 3}
    keys_in_shards = {Path(m).name.split(".")[0] for tar in out.glob("shards/*.tar") for m in _members(tar)}
    assert keys_in_shards == {r["key"] for r in manifest}
    assert {"path", "sha256", "shard", "key", "duration", "streams", "split"} <= set(manifest[0])


def _members(tar: Path) -> list[str]:
    import tarfile

    with tarfile.open(tar) as t:
        return t.getnames()


def test_each_broken_file_gets_a_clear_reason(mixed_batch):
    _, out, _, expected = mixed_batch
    reasons = {Path(q["path"]).name: q for q in map(json.loads, (out / "quarantine.jsonl").read_text().splitlines())}
    assert set(reasons) == set(expected)
    for name, fragment in expected.items():
        assert fragment in reasons[name]["reason"], (name, reasons[name]["reason"])
        assert "path" in reasons[name] and reasons[name]["sha256"]


def test_real_clients_read_the_shards(mixed_batch, shared_media):
    _, out, _, _ = mixed_batch
    urls = [str(p) for p in sorted(out.glob("shards/*.tar"))]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8"))
    manifest = {r["key"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert len(samples) == len(manifest)
    lego = next(s for s in samples if s["json"]["relpath"] == "lego_copy.mp4")  # its other copies are duplicates
    meta = lego["json"]
    frames = sorted(k for k in lego if k.endswith(".jpg"))
    assert len(frames) == len(meta["frame_times"]) == 16  # 5.6 s clip densified to 16 frames
    assert lego[frames[0]].shape == (meta["height"], meta["width"], 3)
    assert (meta["width"], meta["height"]) == (560, 322)  # 560x320 nudged to the patch grid
    assert len(meta["layout"]) == 6 and sum(len(c["frames"]) for c in meta["layout"]) == 16
    audio = lego["wav"]  # webdataset decodes .wav only with torchaudio; raw bytes otherwise
    if isinstance(audio, bytes):
        import wave

        with wave.open(io.BytesIO(audio)) as w:
            assert w.getframerate() == 16000 and w.getnchannels() == 1
            assert abs(w.getnframes() / 16000 - meta["duration_s"]) < 0.2
    assert meta["layout"][-1]["audio"][1] == meta["num_audio_samples"]


def test_sampled_frames_match_an_independent_ffmpeg_decode(mixed_batch, shared_media):
    """The frame at t in the shard is the frame ffmpeg shows at t (same content, small JPEG error)."""
    _, out, _, _ = mixed_batch
    sample = next(
        s
        for s in wds.WebDataset([str(p) for p in sorted(out.glob("shards/*.tar"))], shardshuffle=False)
        if json.loads(s["json"])["relpath"] == "video/lego.mp4" or json.loads(s["json"])["relpath"] == "lego_copy.mp4"
    )
    meta = json.loads(sample["json"])
    t = meta["frame_source_times"][5]
    w, h = meta["width"], meta["height"]
    raw = subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-ss",
            f"{t:.4f}",
            "-i",
            str(shared_media / "video" / "lego.mp4"),
            "-frames:v",
            "1",
            "-vf",
            f"scale={w}:{h}",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout
    reference = np.frombuffer(raw, np.uint8).reshape(h, w, 3).astype(float)
    ours = np.asarray(Image.open(io.BytesIO(sample["f005.jpg"]))).astype(float)
    assert np.abs(ours - reference).mean() < 6.0


@pytest.mark.parametrize("executor", ["local", pytest.param("ray", marks=pytest.mark.slow)])
def test_same_inputs_give_byte_identical_outputs(mixed_batch, executor, request, tmp_path):
    """1 worker (mixed_batch) == 2 local workers == 2 Ray workers, quarantine and duplicates included."""
    root, out, stats, _ = mixed_batch
    assert stats["quarantined"] and stats["duplicates"]  # so those files are compared with content
    pool = request.getfixturevalue("ray_pool") if executor == "ray" else ExecutorConfig(engine="local")
    again = tmp_path / "again"
    ingest_dataset(_mixed_spec(root), again, workers=2, executor=pool)
    assert _digests(again) == _digests(out)


@pytest.fixture(scope="module")
def tiny_reference(tiny_corpus, tmp_path_factory) -> tuple[Path, Path]:
    """The tiny corpus in >= 4 shards (spec file, uninterrupted output of 1 local worker)."""
    spec = corpus_spec(tiny_corpus, shard_max_bytes=300_000)
    root = tmp_path_factory.mktemp("tiny_reference")
    spec_file = root / "tiny.yaml"
    spec_file.write_text(json.dumps(spec.model_dump(mode="json")))  # JSON is YAML
    ingest_dataset(spec, root / "reference")
    assert len(list((root / "reference").glob("shards/*.tar"))) >= 4
    return spec_file, root / "reference"


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "ray"])
def test_killed_run_resumes_to_identical_output(tiny_reference, executor, request, tmp_path):
    """SIGKILL after two shards are published, run again: identical to an uninterrupted run. With Ray,
    both runs join the session's Ray by address, as on a cluster (a killed driver leaves it running)."""
    spec_file, reference = tiny_reference
    killed = tmp_path / "killed"
    cmd = [str(VENV_BIN / "omnistage"), "ingest", "--spec", str(spec_file), "--out", str(killed)]
    if executor == "ray":
        cmd += ["--workers", "2", "--executor", "ray", "--ray-address", request.getfixturevalue("ray_pool").address]
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}  # this checkout's code, whichever one the venv installed
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while not list(killed.glob("shards/shard-000001.tar")) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = sorted(p.name for p in killed.glob("shards/*.tar"))
    assert 0 < len(finished) < len(list(reference.glob("shards/*.tar"))), "kill came too late to test resuming"
    assert not (killed / "manifest.parquet").exists()
    # No partial shard is visible: every visible .tar is complete and equal to the reference.
    for name in finished:
        assert (killed / "shards" / name).read_bytes() == (reference / "shards" / name).read_bytes()
    rerun = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    assert "already finished, skipped" in rerun.stderr
    assert _digests(killed) == _digests(reference)


@pytest.mark.slow
def test_megatron_energon_reads_the_shards(tiny_corpus, tmp_path):
    pytest.importorskip("megatron.energon")
    out = tmp_path / "out"
    ingest_dataset(corpus_spec(tiny_corpus), out)
    copy = tmp_path / "energon"
    shutil.copytree(out / "shards", copy)  # energon prepare writes .nv-meta/ into the folder
    prepare = subprocess.run(
        [
            str(VENV_BIN / "energon"),
            "prepare",
            str(copy),
            "--non-interactive",
            "--split-ratio",
            "1,0,0",
            "--sample-type",
            "CrudeWebdataset",
            "--num-workers",
            "1",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
    )
    assert prepare.returncode == 0, prepare.stdout + prepare.stderr
    from megatron.energon import (
        Cooker,
        DefaultTaskEncoder,
        TextSample,
        WorkerConfig,
        basic_sample_keys,
        get_loader,
        get_train_dataset,
        stateless,
    )

    @stateless
    def cook(raw: dict) -> TextSample:  # our samples always carry KEY.json; that is enough to identify them
        return TextSample(**basic_sample_keys(raw), text=raw["json"]["sha256"])  # energon decodes .json

    class ShardTaskEncoder(DefaultTaskEncoder):
        cookers = [Cooker(cook)]

    stats = json.loads((out / "stats.json").read_text())
    dataset = get_train_dataset(
        copy,
        batch_size=None,
        shuffle_buffer_size=None,
        max_samples_per_sequence=None,
        worker_config=WorkerConfig(rank=0, world_size=1, num_workers=0),
        task_encoder=ShardTaskEncoder(),
        repeat=False,
    )
    seen = {sample.text for sample in get_loader(dataset)}
    manifest = {r["sha256"] for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert seen == manifest and len(seen) == stats["accepted"]


SPEAKERS = {"ana": "en+f3", "bo": "en+m3", "dee": "en-us"}  # with eval_fraction 0.34, dee draws eval


@pytest.fixture(scope="module")
def speech_manifest(tmp_path_factory) -> Path:
    """A Common Voice-like TSV: two espeak-ng clips per speaker, plus a row whose file is missing."""
    from components.demo_data.synth import speak

    root = tmp_path_factory.mktemp("speech_manifest")
    (root / "clips").mkdir()
    rows = []
    for speaker, voice in SPEAKERS.items():
        for number in ("one", "two"):
            name = f"clips/{speaker}_{number}.wav"
            speak(f"{speaker} says {number}", root / name, voice=voice)
            rows.append({"client_id": speaker, "path": name, "sentence": f"{speaker} says {number}"})
    rows.append({"client_id": "bo", "path": "clips/never_uploaded.wav", "sentence": "lost"})
    lines = ["client_id\tpath\tsentence", *("\t".join(r.values()) for r in rows)]
    (root / "validated.tsv").write_text("\n".join(lines) + "\n")
    return root / "validated.tsv"


def test_manifest_source_ingests_labels_quarantines_missing_files_and_splits_by_speaker(speech_manifest, tmp_path):
    manifest = {"path": str(speech_manifest), "label_columns": {"transcript": "sentence", "speaker": "client_id"}}
    spec = DatasetSpec(
        name="speech",
        sources=[SourceSpec(name="cv", manifest=manifest, modality=Modality.AUDIO, task_family="asr")],
        split={"group_field": "speaker", "eval_fraction": 0.34},
    )
    stats = ingest_dataset(spec, tmp_path)
    assert (stats["inputs"], stats["accepted"], stats["quarantined"]) == (7, 6, 1)
    (lost,) = [json.loads(line) for line in (tmp_path / "quarantine.jsonl").read_text().splitlines()]
    missing = speech_manifest.parent / "clips" / "never_uploaded.wav"
    assert lost["path"] == str(missing) and lost["sha256"] is None
    assert lost["reason"] == f"missing file: {speech_manifest} line 8 names {missing}, which does not exist"
    expected = {
        f"clips/{s}_{n}.wav": {"speaker": s, "transcript": f"{s} says {n}"} for s in SPEAKERS for n in ("one", "two")
    }
    samples = list(wds.WebDataset([str(p) for p in sorted(tmp_path.glob("shards/*.tar"))], shardshuffle=False))
    metas = [json.loads(s["json"]) for s in samples]
    assert {m["relpath"]: m["labels"] for m in metas} == expected  # the labels a sidecar would give
    assert all(m["task_family"] == "asr" and m["num_audio_samples"] > 8000 for m in metas)
    assert all(s["wav"][:4] == b"RIFF" for s in samples)
    sides: dict[str, set[str]] = {}
    for meta in metas:
        sides.setdefault(meta["labels"]["speaker"], set()).add(meta["split"])
    assert sides == {"ana": {"train"}, "bo": {"train"}, "dee": {"eval"}}  # no speaker on both sides
