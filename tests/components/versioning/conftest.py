"""Versioning fixtures: a git repository laid out like this one, with the tiny corpus as raw data."""

import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO_ROOT, corpus_spec


@pytest.fixture()
def data_repo(tmp_path, tiny_corpus):
    """A git repository laid out like this one: specs, the ingestion code, raw data."""
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
