"""Versioning an ingestion that wrote to object storage, against a real S3 API (moto_server on 127.0.0.1):
the outputs imported into an S3 DVC remote give the same version id as the same files ingested locally, the
version is stamped into the bucket's stats.json, and what cannot work is refused."""

import json
import socket
import subprocess
import time

import pytest

from components.ingest.pipeline import ingest_dataset
from components.versioning.dvc_dataset import DvcError, commit_dataset
from components.versioning.dvc_remote_dataset import commit_remote_dataset
from tests.components.versioning.test_dvc_dataset import data_repo  # noqa: F401  (fixture)
from tests.conftest import VENV_BIN


@pytest.fixture()
def s3(monkeypatch):
    """A moto S3 server on a free loopback port with buckets `data` and `dvc`; its endpoint in the environment
    the way a pod gets it (AWS_ENDPOINT_URL), read by s3fs and by DVC's subprocesses."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert server.poll() is None and time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.2)
        for name, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
                            "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
            monkeypatch.setenv(name, value)
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem()
        fs.mkdir("data")
        fs.mkdir("dvc")
        yield fs
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.slow
def test_a_bucket_ingestion_gets_the_version_of_the_same_files_ingested_locally(data_repo, s3, monkeypatch):  # noqa: F811
    repo, spec, spec_path = data_repo
    monkeypatch.chdir(repo)
    local = repo / "datasets" / "tiny"
    ingest_dataset(spec, local)
    expected = commit_dataset(repo, spec, spec_path, local, push=False)
    # The same outputs as an ingestion with --out s3://data/ingest/tiny leaves them.
    s3.put(str(local) + "/", "data/ingest/tiny", recursive=True)
    out = "s3://data/ingest/tiny"

    with pytest.raises(DvcError, match="no DVC remote; .* pass --remote s3://bucket/dvc"):
        commit_remote_dataset(repo, spec, out)
    version = commit_remote_dataset(repo, spec, out, remote_url="s3://dvc/store")
    assert (version.version, version.manifest_md5) == (expected.version, expected.manifest_md5)
    assert version.stage == "datasets/s3/data/ingest/tiny/shards.dvc" and version.remote == "s3://dvc/store"
    assert json.loads(s3.cat_file("data/ingest/tiny/stats.json"))["version"]["version"] == expected.version
    # The shards' listing and files are in the remote under their md5s: the version can be fetched from there.
    digest = expected.version.removesuffix(".dir")
    assert s3.exists(f"dvc/store/files/md5/{digest[:2]}/{digest[2:]}.dir")
    with pytest.raises(DvcError, match=r"s3://data/nothing/stats.json does not exist: ingest into --out"):
        commit_remote_dataset(repo, spec, "s3://data/nothing", remote_url="s3://dvc/store")
