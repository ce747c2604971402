"""DVC versioning against a real DVC repository with a local remote."""

import json
import shutil
import subprocess

import pytest
import yaml

from components.ingest.pipeline import ingest_dataset
from components.versioning.dvc_dataset import DvcError, build_dataset, commit_dataset, read_version
from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_build_versions_pushes_and_skips_when_unchanged(data_repo, tmp_path, monkeypatch):
    repo, spec, spec_path = data_repo
    monkeypatch.chdir(repo)  # relative source paths in the spec are relative to the repository
    remote = tmp_path / "remote"
    first = build_dataset(repo, spec, spec_path, repo / "datasets" / "tiny", remote_url=str(remote))
    assert first.reproduced and first.version.endswith(".dir") and first.git_commit
    assert any(remote.rglob("*")), "shards were pushed to the local remote"
    stats = json.loads((repo / "datasets" / "tiny" / "stats.json").read_text())
    assert stats["version"]["version"] == first.version == read_version(repo / "datasets" / "tiny")["version"]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert "ingest-tiny" in lock["stages"]
    again = build_dataset(repo, spec, spec_path, repo / "datasets" / "tiny", remote_url=str(remote))
    assert not again.reproduced and again.version == first.version
    # The ingested folder deleted (as `make clean` does) while dvc.lock stays: built again, same version.
    shutil.rmtree(repo / "datasets" / "tiny")
    rebuilt = build_dataset(repo, spec, spec_path, repo / "datasets" / "tiny", remote_url=str(remote))
    assert rebuilt.reproduced and rebuilt.version == first.version
    assert (repo / "datasets" / "tiny" / "stats.json").is_file()
    # A new raw file changes the version.
    shutil.copy(
        next((repo / "raw" / "image_caption" / "train").glob("*.png"), None)
        or next((repo / "raw" / "image_caption" / "train").glob("*.jpg")),
        repo / "raw" / "image_caption" / "train" / "extra_copy.png",
    )
    (repo / "raw" / "text" / "train" / "new.txt").write_text("one plus one is two.\n")
    third = build_dataset(repo, spec, spec_path, repo / "datasets" / "tiny", remote_url=str(remote))
    assert third.reproduced and third.version != first.version


@pytest.mark.slow
def test_commit_records_shards_written_outside_dvc(data_repo, monkeypatch):
    repo, spec, spec_path = data_repo
    monkeypatch.chdir(repo)
    out = repo / "datasets" / "tiny"
    ingest_dataset(spec, out)
    version = commit_dataset(repo, spec, spec_path, out, push=False)
    assert version.version.endswith(".dir")
    status = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "dvc"), "status", "ingest-tiny", "--json"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(status.stdout or "{}") == {}  # nothing left to reproduce


def test_output_outside_the_repository_is_refused(data_repo, tmp_path):
    repo, spec, spec_path = data_repo
    with pytest.raises(DvcError, match="outside the DVC repository"):
        commit_dataset(repo, spec, spec_path, tmp_path / "elsewhere", push=False)
