"""A real S3 HTTP API on 127.0.0.1 for the object-storage tests: moto's `moto_server`, one per session.

The server is pointed at through the project's one endpoint setting, `AWS_ENDPOINT_URL`
(components/object_storage.py), with dummy credentials, so the code under test and the CLI processes it
starts reach it exactly as they would reach AWS or MinIO.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_answering(url: str, proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with code {proc.returncode} before answering on {url}")
        try:
            # moto's first request imports its service backends: seconds on a busy 2-core machine (CI saw
            # the read time out at 1 s and fail every S3 test), so a slow answer is waited for, not fatal
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise RuntimeError(f"moto_server did not answer on {url} within {timeout_s:.0f} s")


@contextmanager
def moto_s3_server(log_path: Path) -> Iterator[str]:
    """Start `moto_server` (next to this interpreter) on a free port; yields the endpoint URL and sets
    `AWS_ENDPOINT_URL` and the dummy credentials in this process's environment (so child processes
    inherit them) until exit, when the server is stopped and the environment restored."""
    executable = Path(sys.executable).parent / "moto_server"
    if not executable.exists():
        raise RuntimeError(f"{executable} is missing: install the dev extra (moto[server])")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(executable), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    saved = {k: os.environ.get(k) for k in [*S3_ENV, "AWS_ENDPOINT_URL"]}
    try:
        _wait_until_answering(endpoint, proc)
        os.environ.update(S3_ENV, AWS_ENDPOINT_URL=endpoint)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@functools.cache
def _client(endpoint: str):
    """One boto3 client per endpoint: creating one costs ~0.1 CPU-s, too much for a polling reader."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint)


def s3_client():
    return _client(os.environ["AWS_ENDPOINT_URL"])


def create_bucket(prefix: str = "test") -> str:
    """A new empty bucket on the current endpoint; returns its `s3://` URI."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}".lower()
    s3_client().create_bucket(Bucket=name)
    return f"s3://{name}"


def upload_folder(folder: Path, uri: str) -> None:
    """Copy a local folder's files to `uri` (s3://bucket/prefix), keeping relative paths."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    client = s3_client()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        client.upload_file(str(path), bucket, "/".join(filter(None, [prefix, path.relative_to(folder).as_posix()])))


def list_objects(uri: str) -> dict[str, float]:
    """Key (relative to the prefix) -> last-modified time of every object under `uri`, read fresh."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    found: dict[str, float] = {}
    for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            found[obj["Key"][len(prefix) :]] = obj["LastModified"].timestamp()
    return found


def read_object(uri: str, key: str) -> bytes:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    full = "/".join(filter(None, [prefix.rstrip("/"), key]))
    return s3_client().get_object(Bucket=bucket, Key=full)["Body"].read()
