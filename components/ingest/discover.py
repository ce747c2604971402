"""Find the input files a dataset spec names, in a fixed order, with their labels (sidecar or manifest)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import fsspec

from components.ingest.manifest_source import read_manifest_entries
from components.specs.dataset import SIDECAR_SUFFIX, DatasetSpec, LabelSource, Modality, SourceSpec

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputFile:
    source: str
    modality: Modality
    task_family: str | None
    url: str  # what fsspec opens; a plain path for local files
    relpath: str  # relative to the source root: stable across machines, used in shard metadata
    labels: dict = field(default_factory=dict, hash=False)
    quarantine_reason: str | None = None  # known before probing: a bad sidecar, a missing manifest file


def _expand(source: SourceSpec) -> tuple[fsspec.AbstractFileSystem, str, list[str]]:
    fs, _, paths = fsspec.get_fs_token_paths(source.path)
    root = source.path
    if any(c in source.path for c in _GLOB_CHARS):
        root = source.path.split("*")[0].split("?")[0].split("[")[0].rstrip("/")
        matches = paths
    elif fs.isdir(source.path):
        matches = fs.find(source.path)
    elif fs.exists(source.path):
        matches, root = [source.path], str(Path(source.path).parent)
    else:
        raise FileNotFoundError(f"source '{source.name}': path {source.path!r} does not exist")
    root_stripped = fs._strip_protocol(root).rstrip("/")
    files = sorted(m for m in matches if not fs.isdir(m) and not m.endswith(SIDECAR_SUFFIX))
    return fs, root_stripped, files


def _read_sidecar(fs: fsspec.AbstractFileSystem, path: str) -> tuple[dict, str | None]:
    base = path.rsplit(".", 1)[0] if "." in Path(path).name else path
    sidecar = base + SIDECAR_SUFFIX
    if not fs.exists(sidecar):
        return {}, None
    try:
        with fs.open(sidecar, "rb") as fh:
            labels = json.loads(fh.read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        return {}, f"sidecar {sidecar} is not valid JSON: {exc}"
    if not isinstance(labels, dict):
        return {}, f"sidecar {sidecar} must hold a JSON object, got {type(labels).__name__}"
    return labels, None


def discover_inputs(spec: DatasetSpec) -> list[InputFile]:
    """Every input file of every source; sidecars (`*.labels.json`) are attached, not counted as inputs."""
    found: list[InputFile] = []
    for source in spec.sources:
        if source.manifest is not None:
            found += [
                InputFile(
                    source.name, source.modality, source.task_family, e.url, e.relpath, e.labels, e.quarantine_reason
                )
                for e in read_manifest_entries(source.manifest)
            ]
            continue
        fs, root, files = _expand(source)
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        for path in files:
            labels, error = ({}, None)
            if source.labels is LabelSource.SIDECAR:
                labels, error = _read_sidecar(fs, path)
            url = path if protocol in ("file", "local") else f"{protocol}://{path}"
            relpath = path[len(root) + 1 :] if path.startswith(root + "/") else Path(path).name
            found.append(InputFile(source.name, source.modality, source.task_family, url, relpath, labels, error))
    return found
