"""Object storage addressing shared by ingestion, versioning and the CLI: URIs, the S3 endpoint, inputs.

A location is a local path (str or Path, no scheme) or an fsspec URI (`s3://`, `gs://`, ...). Local
paths keep their plain-file code paths everywhere; only URIs go through fsspec.

**The S3 endpoint setting.** One setting for the whole project: the standard `AWS_ENDPOINT_URL`
environment variable (or the S3-only `AWS_ENDPOINT_URL_S3`, which wins when both are set). boto3 and
s3fs (through aiobotocore) read it themselves; DVC remotes get it as their `endpointurl` from
`s3_endpoint_url()` (components/versioning/dvc_dataset.py). Unset means AWS itself. Credentials come the
usual AWS way (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, a profile, an instance role); GCS through
gcsfs's own (`GOOGLE_APPLICATION_CREDENTIALS`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import fsspec

ENDPOINT_ENV_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
_LOCAL_PROTOCOLS = ("file", "local")


def s3_endpoint_url() -> str | None:
    """The S3 endpoint every client of the project uses; None for AWS itself."""
    for name in ENDPOINT_ENV_VARS:
        if os.environ.get(name):
            return os.environ[name]
    return None


def protocol_of(location: str | Path) -> str:
    """`s3`, `gs`, ... for a URI; `file` for a local path (with or without `file://`)."""
    text = str(location)
    return text.split("://", 1)[0].lower() if "://" in text else "file"


def is_remote(location: str | Path) -> bool:
    return protocol_of(location) not in _LOCAL_PROTOCOLS


def join(location: str | Path, *parts: str) -> str:
    """`location/part/...` for a local path or a URI (a URI keeps its `scheme://`)."""
    if is_remote(location):
        return "/".join([str(location).rstrip("/"), *parts])
    return str(Path(location, *parts))


@contextlib.contextmanager
def open_media(url: str) -> Iterator[str | IO[bytes]]:
    """What a decoder opens: the path itself for a local file (PyAV and Pillow read it directly, as
    before), a seekable fsspec file object for an object in storage (ranged GETs, no local copy)."""
    if not is_remote(url):
        yield url
        return
    with fsspec.open(url, "rb") as fh:
        yield fh


@contextlib.contextmanager
def local_copy(url: str) -> Iterator[str]:
    """The path of a local copy of `url`, deleted on exit; a local file is its own copy.

    The probe phase uses it for objects in storage: ffprobe is a subprocess that cannot read a Python
    file object, and hashing reads every byte anyway, so one download serves hash, ffprobe and
    fingerprint instead of three reads of the object. The copy keeps the object's file name, because
    libavformat weighs the extension when it guesses a container."""
    if not is_remote(url):
        yield url
        return
    folder = tempfile.mkdtemp(prefix="omnistage-input-")
    try:
        target = os.path.join(folder, url.rstrip("/").rsplit("/", 1)[-1] or "object")
        fs, path = fsspec.core.url_to_fs(url)
        fs.get_file(path, target)
        yield target
    finally:
        shutil.rmtree(folder, ignore_errors=True)
