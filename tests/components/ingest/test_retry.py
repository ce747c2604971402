"""`--retry-quarantined`: a file that could not be read is recovered once it can be; a permanently bad
file is not re-attempted; the shards written before are byte-identical.

How a transient failure is made here: tests run as root, which ignores `chmod 000`, and a FIFO would
block open() forever instead of failing. A dangling symbolic link is what storage that is not there yet
looks like (a volume not mounted, a sync not finished): discovery lists it, reading it fails with
ENOENT ("unreadable file: ..."); pointing it at the file makes it readable.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess

import pyarrow.parquet as pq
import pytest

import components.ingest.retry as retry_module
from components.demo_data.synth import run_ffmpeg
from components.ingest.decode import DecodeError, decode_media
from components.ingest.pipeline import ingest_dataset
from components.ingest.retry import is_transient, retry_quarantined
from components.specs.dataset import DatasetSpec
from tests.conftest import REPO_ROOT, VENV_BIN


def _noise(seed: int) -> list[str]:
    return ["-f", "lavfi", "-i", f"anoisesrc=d=2:c=pink:r=16000:seed={seed}"]


@pytest.fixture
def batch(tmp_path):
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is needed (make system-deps)")
    raw = tmp_path / "raw"
    raw.mkdir()
    run_ffmpeg(_noise(1), raw / "noise_a.wav")
    run_ffmpeg(["-f", "lavfi", "-i", "mandelbrot=s=64x64:r=10", "-t", "2", "-c:v", "libx264"], raw / "fractal.mp4")
    (raw / "not_media.mp4").write_text("plain text, not a video\n" * 10)  # permanent: content judged
    (raw / "late.wav").symlink_to(tmp_path / "storage" / "late.wav")  # transient: not there yet
    spec = DatasetSpec.adhoc(str(raw))
    out = tmp_path / "out"
    stats = ingest_dataset(spec, out)
    assert (stats["accepted"], stats["quarantined"]) == (2, 2)
    return tmp_path, spec, out


def test_reasons_are_classified_by_the_table():
    assert is_transient("unreadable file: [Errno 2] No such file or directory: 'x.wav'")
    assert is_transient("missing file: m.tsv line 3 names x.wav, which does not exist")
    assert is_transient("unreadable file: decode error at 1.20 s: [Errno 5] Input/output error")
    for permanent in ("not a media file ffprobe can read: x", "empty file (0 bytes)", "decode error at 0.00 s: y",
                      "expectation expect_column_values_to_be_between(width) failed", None):  # fmt: skip
        assert not is_transient(permanent)


def test_a_file_gone_before_decoding_is_a_transient_failure(tmp_path):
    """Between the probe and the shard phase a file can vanish (an unmounted volume): an I/O error."""
    with pytest.raises(DecodeError) as caught:
        decode_media(str(tmp_path / "gone.mp4"), [0.5], (32, 32), None, 1.0)
    assert is_transient(str(caught.value)), str(caught.value)


def test_recovered_file_goes_to_a_new_shard_and_nothing_else_changes(batch, monkeypatch):
    tmp_path, spec, out = batch
    before = {p.name: p.read_bytes() for p in out.glob("shards/*.tar")}
    (tmp_path / "storage").mkdir()
    run_ffmpeg(_noise(3), tmp_path / "storage" / "late.wav")  # the storage caught up
    probed = []
    real_probe = retry_module.probe_input
    monkeypatch.setattr(retry_module, "probe_input", lambda item, fp: probed.append(item.url) or real_probe(item, fp))
    stats = retry_quarantined(spec, out)
    assert [p.rsplit("/", 1)[-1] for p in probed] == ["late.wav"]  # the permanent failure was not re-attempted
    assert stats["retry"] | {"new_shards": None} == {"retried": 1, "recovered": 1, "still_quarantined": 0,
                                                      "duplicates": 0, "not_retried_permanent": 1,
                                                      "new_shards": None}  # fmt: skip
    after = {p.name: p.read_bytes() for p in out.glob("shards/*.tar")}
    assert {name: after[name] for name in before} == before  # old shards byte-identical
    (new,) = set(after) - set(before)
    assert stats["retry"]["new_shards"] == [new]
    manifest = {r["path"].rsplit("/", 1)[-1]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert set(manifest) == {"noise_a.wav", "fractal.mp4", "late.wav"} and manifest["late.wav"]["shard"] == new
    (left,) = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert left["path"].endswith("not_media.mp4") and left["reason"].startswith("not a media file")
    assert (stats["accepted"], stats["quarantined"], stats["inputs"]) == (3, 1, 4)
    again = retry_quarantined(spec, out)  # nothing transient is left: a second retry changes nothing
    assert again["retry"]["retried"] == 0 and {p.name for p in out.glob("shards/*.tar")} == set(after)


def test_a_file_still_unreadable_stays_quarantined(batch):
    _, spec, out = batch
    quarantine = (out / "quarantine.jsonl").read_bytes()
    stats = retry_quarantined(spec, out)
    assert (stats["retry"]["retried"], stats["retry"]["still_quarantined"], stats["retry"]["new_shards"]) == (1, 1, [])
    assert (out / "quarantine.jsonl").read_bytes() == quarantine


def test_cli_runs_the_retry(batch):
    if not (VENV_BIN / "omnistage").exists():
        pytest.skip(".venv/bin/omnistage is absent")
    tmp_path, _, out = batch
    cmd = [str(VENV_BIN / "omnistage"), "ingest", "--input", str(tmp_path / "raw"), "--out", str(out)]
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}  # this checkout's code, whichever one the venv installed
    run = functools.partial(subprocess.run, capture_output=True, text=True, env=env)
    done = run([*cmd, "--retry-quarantined", "--json"], check=True)
    assert json.loads(done.stdout)["retry"]["retried"] == 1
    refused = run([*cmd, "--retry-quarantined", "--phase", "probe"])
    assert refused.returncode != 0 and "leave out --phase" in refused.stdout + refused.stderr


@pytest.mark.slow
def test_retry_on_ray_equals_the_local_retry(batch, ray_pool):
    """Re-probing and the new shard run as Ray tasks; the outputs equal those of a local retry."""
    tmp_path, spec, out = batch
    (tmp_path / "storage").mkdir()
    run_ffmpeg(_noise(3), tmp_path / "storage" / "late.wav")
    on_ray = tmp_path / "on_ray"
    shutil.copytree(out, on_ray)
    local = retry_quarantined(spec, out)
    stats = retry_quarantined(spec, on_ray, workers=2, executor=ray_pool)
    assert stats["retry"] == local["retry"] and stats["retry"]["recovered"] == 1
    for name in ("shards", "manifest.parquet", "quarantine.jsonl", "duplicates.jsonl", "stats.json"):
        files = sorted(p.relative_to(out) for p in [out / name, *(out / name).rglob("*")] if p.is_file())
        assert files and all((out / f).read_bytes() == (on_ray / f).read_bytes() for f in files), name
