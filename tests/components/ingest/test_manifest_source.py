"""Manifest sources: a row gives the labels a sidecar would; missing files and bad rows are reported."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.ingest.discover import discover_inputs
from components.ingest.manifest_source import read_manifest_entries
from components.ingest.manifest_table import ManifestError
from components.specs.dataset import DatasetSpec, ManifestSpec, Modality, SourceSpec
from tests.components.ingest.manifest_files import write_manifest
from tests.conftest import corpus_spec


def _manifest_labels(manifest: Path, **options) -> dict[str, dict]:
    source = SourceSpec(name="m", manifest=ManifestSpec(path=str(manifest), **options), modality=Modality.AUTO)
    return {i.url: i.labels for i in discover_inputs(DatasetSpec(name="m", sources=[source]))}


@pytest.fixture(scope="module")
def sidecar_labels(tiny_corpus) -> dict[str, dict]:
    """url -> labels, as discovery reads them from the demo corpus's sidecars (every task family)."""
    labels = {i.url: i.labels for i in discover_inputs(corpus_spec(tiny_corpus))}
    assert {x["task_family"] for x in labels.values()} == {
        "video_qa",
        "av_qa",
        "voice_qa",
        "asr",
        "assistant_speech",
        "image_caption",
        "text",
    }
    return labels


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_typed_manifest_rows_give_the_sidecar_labels(sidecar_labels, tmp_path, suffix):
    # Paths relative to the manifest's folder, even when that means "../".
    rows = [{"path": os.path.relpath(url, tmp_path), **labels} for url, labels in sidecar_labels.items()]
    assert _manifest_labels(write_manifest(tmp_path / f"corpus{suffix}", rows)) == sidecar_labels


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_question_per_row_tables_give_the_sidecar_labels(sidecar_labels, tmp_path, suffix):
    """One row per question, as VQA tables come; CSV/TSV cells are text (`count` 3 becomes "3")."""
    flat = {url: labels for url, labels in sidecar_labels.items() if labels["task_family"] != "av_qa"}  # nested
    rows = []
    for url, labels in flat.items():
        common = {"path": url, **{k: v for k, v in labels.items() if k != "qa"}}
        rows += [common | qa for qa in labels.get("qa", [])] or [common]
    expected = {  # a clip without questions (an empty `qa`) is one row without question cells
        url: {k: str(v) if isinstance(v, int) else v for k, v in labels.items() if k != "qa" or v}
        for url, labels in flat.items()
    }
    assert _manifest_labels(write_manifest(tmp_path / f"corpus{suffix}", rows)) == expected


def test_label_columns_rename_and_select(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp3").write_bytes(b"x")
    rows = [{"client_id": "f00d", "path": "clips/a.mp3", "sentence": "hello there", "up_votes": 2}]
    manifest = write_manifest(tmp_path / "validated.tsv", rows)
    labels = _manifest_labels(manifest, label_columns={"transcript": "sentence", "speaker": "client_id"})
    assert labels == {str(tmp_path / "clips" / "a.mp3"): {"transcript": "hello there", "speaker": "f00d"}}


def test_paths_resolve_relative_to_the_manifest_absolute_or_as_urls(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("sub/a.wav", "b.wav", "c.wav", "d.wav"):
        (tmp_path / name).write_bytes(b"x")
    cells = ["a.wav", "../b.wav", str(tmp_path / "c.wav"), f"file://{tmp_path / 'd.wav'}"]
    manifest = write_manifest(tmp_path / "sub" / "m.jsonl", [{"path": c} for c in cells])
    entries = read_manifest_entries(ManifestSpec(path=str(manifest)))
    assert [(e.url, e.relpath) for e in entries] == [
        (str(tmp_path / "sub" / "a.wav"), "a.wav"),
        (str(tmp_path / "b.wav"), str(tmp_path / "b.wav")),
        (str(tmp_path / "c.wav"), str(tmp_path / "c.wav")),
        (f"file://{tmp_path / 'd.wav'}", f"file://{tmp_path / 'd.wav'}"),
    ]
    assert all(e.quarantine_reason is None for e in entries)


def test_a_manifest_at_a_url_resolves_relative_paths_beside_it():
    fs = fsspec.filesystem("memory")
    fs.pipe("/corpus/clips/a.wav", b"x")
    fs.pipe("/corpus/meta.jsonl", b'{"path": "clips/a.wav"}\n{"path": "clips/gone.wav"}\n')
    entries = read_manifest_entries(ManifestSpec(path="memory://corpus/meta.jsonl"))
    assert [(e.url, e.relpath) for e in entries] == [
        ("memory://corpus/clips/a.wav", "clips/a.wav"),
        ("memory://corpus/clips/gone.wav", "clips/gone.wav"),
    ]
    assert entries[0].quarantine_reason is None and entries[1].quarantine_reason.startswith("missing file:")


def test_a_row_whose_file_is_missing_is_kept_with_a_reason(tmp_path):
    (tmp_path / "here.wav").write_bytes(b"x")
    manifest = write_manifest(tmp_path / "m.csv", [{"path": "here.wav"}, {"path": "gone.wav", "transcript": "t"}])
    here, gone = read_manifest_entries(ManifestSpec(path=str(manifest)))
    assert here.quarantine_reason is None
    assert gone.labels == {"transcript": "t"}
    assert (
        gone.quarantine_reason == f"missing file: {manifest} line 3 names {tmp_path / 'gone.wav'}, which does not exist"
    )


BAD_ROWS = [  # (manifest name, rows, ManifestSpec options, the error after "FILE: ")
    (
        "m.csv",
        [{"file": "a.wav"}],
        {},
        "line 1 (header), field 'path': no such column (it has ['file']); set manifest.path_column",
    ),
    (
        "m.csv",
        [{"path": "a.wav", "t": "x"}],
        {"label_columns": {"transcript": "sentence"}},
        "line 1 (header), field 'sentence': no such column (it has ['path', 't']); set manifest.label_columns.transc",
    ),
    ("m.jsonl", [{"path": "a.wav"}, {"file": "b.wav"}], {}, "line 2, field 'path': missing; every row needs the path"),
    ("m.csv", [{"path": "a.wav", "t": "x"}, {"path": "", "t": "y"}], {}, "line 3, field 'path': missing"),
    ("m.jsonl", [{"path": 7}], {}, "line 1, field 'path': 7 is not a path"),
    (
        "m.jsonl",
        [{"path": "a.wav", "transcript": 5}],
        {},
        "line 1, field 'transcript': Input should be a valid string (given: 5); transcript must be text",
    ),
    (
        "m.jsonl",
        [{"path": "a.wav", "sentence": ["x"]}],
        {"label_columns": {"transcript": "sentence"}},
        "line 1, field 'sentence': Input should be a valid string",
    ),
    ("m.parquet", [{"path": "a.wav", "speaker": 1.5}], {}, "row 1, field 'speaker': "),
    (
        "m.jsonl",
        [{"path": "a.wav", "qa": [{"question": "q?", "answer": 3}]}],
        {},
        "line 1, field 'qa' at qa[0].answer: Input should be a valid string (given: 3); qa must be a list of",
    ),
    (
        "m.csv",
        [{"path": "a.wav", "question": "q?", "answer": "a", "choices": "a|b"}],
        {},
        "line 2, field 'choices': 'a|b' is not JSON; write choices as a list of strings",
    ),
    (
        "m.tsv",
        [{"path": "a.wav", "question": "q?"}],
        {},
        "line 2, field 'answer': empty, but the row has ['question']; a question needs its answer",
    ),
    (
        "m.csv",
        [{"path": "a.wav", "transcript": "one"}, {"path": "a.wav", "transcript": "two"}],
        {},
        "line 3 names the same file as line 2 with another 'transcript' ('two' vs 'one')",
    ),
]


@pytest.mark.parametrize(("name", "rows", "options", "message"), BAD_ROWS)
def test_bad_rows_name_the_file_line_field_and_fix(tmp_path, name, rows, options, message):
    (tmp_path / "a.wav").write_bytes(b"x")
    manifest = write_manifest(tmp_path / name, rows)
    with pytest.raises(ManifestError) as error:
        read_manifest_entries(ManifestSpec(path=str(manifest), **options))
    assert str(error.value).startswith(f"{manifest}: {message}"), str(error.value)


def test_a_column_that_is_not_a_json_value_is_refused(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"x")
    table = pa.table({"path": ["a.wav"], "recorded": [dt.datetime(2020, 1, 1)]})
    pq.write_table(table, tmp_path / "m.parquet")
    with pytest.raises(
        ManifestError, match=r"row 1, field 'recorded': a datetime is not a label value .* cast the column"
    ):
        read_manifest_entries(ManifestSpec(path=str(tmp_path / "m.parquet")))


def test_rows_of_one_file_add_their_questions(tmp_path):
    (tmp_path / "v.mp4").write_bytes(b"x")
    rows = [
        {
            "path": "v.mp4",
            "task_family": "video_qa",
            "question": "Colour?",
            "answer": "red",
            "choices": ["red", "blue"],
        },
        {"path": "v.mp4", "task_family": "video_qa", "question": "How many?", "answer": "2"},
    ]
    (entry,) = read_manifest_entries(ManifestSpec(path=str(write_manifest(tmp_path / "m.csv", rows))))
    assert entry.labels == {
        "task_family": "video_qa",
        "qa": [
            {"question": "Colour?", "answer": "red", "choices": ["red", "blue"]},
            {"question": "How many?", "answer": "2"},
        ],
    }
    assert json.loads(json.dumps(entry.labels)) == entry.labels
