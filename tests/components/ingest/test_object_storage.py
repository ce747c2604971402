"""Ingestion from and to S3 (moto_server on 127.0.0.1): same bytes as a local run, whole shards only,
a killed run resumed to identical objects."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from components.ingest.pipeline import ingest_dataset
from components.specs.dataset import DatasetSpec
from tests.conftest import VENV_BIN, corpus_spec
from tests.s3_server import create_bucket, list_objects, read_object, upload_folder

SHARD_MAX_BYTES = 300_000  # the tiny corpus in 4+ shards, so a kill can land between two of them
REPORTS = ["manifest.parquet", "quarantine.jsonl", "duplicates.jsonl", "stats.json"]


def _s3_spec(local_spec: DatasetSpec, inputs_uri: str) -> DatasetSpec:
    doc = local_spec.model_dump(mode="json")
    for source in doc["sources"]:
        source["path"] = f"{inputs_uri}/{Path(source['path']).name}"
    return DatasetSpec.model_validate(doc)


@pytest.fixture(scope="module")
def s3_and_local(s3_endpoint, tiny_corpus, tmp_path_factory):
    """The tiny corpus ingested twice: local folder -> local folder, and S3 -> S3."""
    local_spec = corpus_spec(tiny_corpus, shard_max_bytes=SHARD_MAX_BYTES)
    local_out = tmp_path_factory.mktemp("local_out")
    ingest_dataset(local_spec, local_out)
    bucket = create_bucket("ingest")
    upload_folder(tiny_corpus, f"{bucket}/raw")
    s3_spec = _s3_spec(local_spec, f"{bucket}/raw")
    s3_out = f"{bucket}/datasets/tiny"
    stats = ingest_dataset(s3_spec, s3_out)
    return local_out, s3_spec, s3_out, stats


def _without_location(rows: list[dict]) -> list[dict]:
    """Manifest rows minus `path`, which names where the input was read (a local path or an s3:// URI)."""
    return [{k: v for k, v in row.items() if k != "path"} for row in rows]


@pytest.mark.slow
def test_s3_inputs_to_s3_outputs_equal_a_local_ingestion(s3_and_local):
    local_out, _, s3_out, stats = s3_and_local
    objects = list_objects(s3_out)
    local_shards = sorted(p.name for p in (local_out / "shards").glob("*.tar"))
    assert len(local_shards) >= 4 and stats["accepted"] > 0
    assert sorted(k.split("/")[1] for k in objects if k.startswith("shards/")) == local_shards
    for name in local_shards:
        assert read_object(s3_out, f"shards/{name}") == (local_out / "shards" / name).read_bytes(), name
    remote_manifest = pq.read_table(io.BytesIO(read_object(s3_out, "manifest.parquet"))).to_pylist()
    local_manifest = pq.read_table(local_out / "manifest.parquet").to_pylist()
    assert _without_location(remote_manifest) == _without_location(local_manifest)
    assert all(row["path"].startswith(s3_out.split("/datasets")[0] + "/raw/") for row in remote_manifest)
    assert json.loads(read_object(s3_out, "stats.json")) == json.loads((local_out / "stats.json").read_text())
    # Sidecar labels were read from the bucket: the splits they carry reached the manifest.
    assert {row["split"] for row in remote_manifest} == {"train", "eval"}
    plan = json.loads(read_object(s3_out, ".work/plan.json"))
    assert {f".work/{s['name']}.result.json" for s in plan["shards"]} <= set(objects)
    assert {".work/probe.parquet", "card/README.md", "card/contact_sheet.jpg", *REPORTS} <= set(objects)
    assert any(k.startswith("validation/gx/") for k in objects), "GX Data Docs are uploaded too"
    assert not [k for k in objects if k.endswith(".tmp")], "staging files never reach the bucket"


def _is_complete_tar(data: bytes) -> bool:
    """A finished tar ends with two zero blocks and fills whole records; tarfile alone forgives their absence."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getnames()
    return bool(members) and len(data) % tarfile.RECORDSIZE == 0 and data[-2 * tarfile.BLOCKSIZE :].count(0) == 1024


@pytest.mark.slow
def test_killed_s3_run_resumes_to_identical_objects_and_readers_see_whole_shards(s3_and_local, tmp_path):
    local_out, s3_spec, reference, _ = s3_and_local
    # Whole shards as a local run writes them (renamed into place), independent of the upload path.
    expected = {f"shards/{p.name}": p.read_bytes() for p in (local_out / "shards").glob("*.tar")}
    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(json.dumps(s3_spec.model_dump(mode="json")))  # JSON is YAML
    out = create_bucket("resume") + "/datasets/tiny"
    cmd = [str(VENV_BIN / "omnistage"), "ingest", "--spec", str(spec_file), "--out", out]

    def watch(proc: subprocess.Popen, stop_at_first_shard: bool) -> set[str]:
        """List the output as a reader would until the run ends (or its first shard appears): every
        visible shard must be whole, i.e. equal to the reference run's."""
        seen: set[str] = set()
        deadline = time.monotonic() + 180
        while proc.poll() is None and time.monotonic() < deadline:
            for key in list_objects(out):
                assert not key.endswith(".tmp"), f"a temporary reached the bucket: {key}"
                if key.startswith("shards/") and key not in seen:
                    data = read_object(out, key)
                    assert _is_complete_tar(data), f"{key} visible before it was complete"
                    assert data == expected[key], f"{key} differs from the local run's"
                    seen.add(key)
            if stop_at_first_shard and seen:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        proc.wait(timeout=60)
        return seen

    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    published = watch(first, stop_at_first_shard=True)
    assert first.returncode == -signal.SIGKILL
    left = list_objects(out)
    assert 0 < len([k for k in left if k.startswith("shards/")]) < len(expected), "kill came too late"
    assert "manifest.parquet" not in left
    log = tmp_path / "rerun.log"
    with open(log, "w") as stderr:
        second = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr)
        watch(second, stop_at_first_shard=False)
    assert second.returncode == 0, log.read_text()[-3000:]
    assert "already finished, skipped" in log.read_text()
    final = list_objects(out)
    assert sorted(k for k in final if k.startswith("shards/")) == sorted(expected)
    for key in expected:
        assert read_object(out, key) == expected[key], key
    for key in REPORTS:
        assert read_object(out, key) == read_object(reference, key), key
    # Shards published before the kill were skipped, not uploaded again.
    assert {k: final[k] for k in published} == {k: left[k] for k in published}
