"""DVC with an S3 remote (moto_server on 127.0.0.1): push, then restore in a fresh clone two ways:
`dvc pull` with its own cache, and `omnistage dataset pull NAME VERSION` from the version alone."""

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from components.ingest.pipeline import ingest_dataset
from components.versioning.dvc_dataset import commit_dataset, configure_s3_endpoints, run_dvc
from tests.conftest import VENV_BIN
from tests.s3_server import list_objects

GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]


def _md5s(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar"))}


@pytest.mark.slow
def test_s3_remote_push_then_pull_in_a_fresh_clone(data_repo, s3_bucket, tmp_path, monkeypatch):
    repo, spec, spec_path = data_repo
    monkeypatch.chdir(repo)
    out = repo / "datasets" / "tiny"
    ingest_dataset(spec, out)
    version = commit_dataset(repo, spec, spec_path, out, remote_url=f"{s3_bucket}/dvc")
    assert version.remote == f"{s3_bucket}/dvc"
    md5 = version.version.removesuffix(".dir")
    assert f"files/md5/{md5[:2]}/{md5[2:]}.dir" in list_objects(f"{s3_bucket}/dvc"), "the version was pushed"
    # The endpoint belongs to the machine: in .dvc/config.local, not in the committed .dvc/config.
    assert "endpointurl" in (repo / ".dvc" / "config.local").read_text()
    assert "endpointurl" not in (repo / ".dvc" / "config").read_text()
    original = _md5s(out / "shards")
    assert original

    subprocess.run([*GIT, "add", "dvc.yaml", "dvc.lock", ".dvc/config", ".dvc/.gitignore", "datasets/tiny/.gitignore"],
                   cwd=repo, check=True)  # fmt: skip
    subprocess.run([*GIT, "commit", "-q", "-m", "dataset version"], cwd=repo, check=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    configure_s3_endpoints(clone)  # what a user on a new machine does once (docs: README)
    run_dvc(clone, "pull", "ingest-tiny")
    assert _md5s(clone / "datasets" / "tiny" / "shards") == original
    assert (clone / ".dvc" / "cache").is_dir() and not (clone / ".dvc" / "cache").samefile(repo / ".dvc" / "cache")

    # From the version alone: no dvc.lock, no DVC cache, just the remote.
    restored = tmp_path / "restored"
    cli = [str(VENV_BIN / "omnistage"), "dataset", "pull", "tiny", version.version, "--out", str(restored),
           "--remote", f"{s3_bucket}/dvc"]  # fmt: skip
    summary = json.loads(subprocess.run(cli, capture_output=True, text=True, check=True).stdout)
    assert summary["files"] == len(original) and _md5s(restored) == original
