"""Reading manifest tables: the four formats give the same rows; unreadable rows name file and line."""

from __future__ import annotations

import pytest

from components.ingest.manifest_table import ManifestError, read_manifest_table
from components.specs.dataset import ManifestSpec
from tests.components.ingest.manifest_files import write_manifest

ROWS = [
    {"path": "a.wav", "transcript": 'he said "hi", twice', "speaker": "ana"},
    {"path": "b.wav", "transcript": "yes", "speaker": None},
]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_each_format_gives_the_same_rows(tmp_path, suffix):
    manifest = write_manifest(tmp_path / f"m{suffix}", ROWS)
    columns, rows = read_manifest_table(ManifestSpec(path=str(manifest)))
    assert [r.values for r in rows] == [ROWS[0], {"path": "b.wav", "transcript": "yes"}]  # empty = no value
    first_line = {".csv": 2, ".tsv": 2, ".jsonl": 1}.get(suffix)
    assert [r.where for r in rows] == (
        ["row 1", "row 2"] if first_line is None else [f"line {first_line}", f"line {first_line + 1}"]
    )
    assert columns == (None if suffix == ".jsonl" else ["path", "transcript", "speaker"])


def test_csv_line_numbers_count_quoted_line_breaks_and_ignore_a_byte_order_mark(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text('\ufeffpath,transcript\na.wav,"two\nlines"\n\nb.wav,one\n', encoding="utf-8")
    columns, rows = read_manifest_table(ManifestSpec(path=str(manifest)))
    assert columns == ["path", "transcript"]
    assert [(r.where, r.values["transcript"]) for r in rows] == [("line 2", "two\nlines"), ("line 5", "one")]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("m.jsonl", '{"path": "a.wav"}\n\n{"path": "b.wav", \n', "line 3: not valid JSON"),
        ("m.jsonl", '["a.wav"]\n', "line 1: a list, not a JSON object"),
        ("m.csv", "path,transcript\na.wav,hi\nb.wav,hi,there\n", "line 3: 3 cells, but the header has 2 columns"),
        ("m.tsv", "path\ttranscript\na.wav\thi\tthere\n", "line 2: 3 cells, but the header has 2 columns"),
        ("m.csv", "", "line 1: no header row"),
    ],
)
def test_unreadable_rows_name_the_file_and_line(tmp_path, name, text, message):
    manifest = tmp_path / name
    manifest.write_text(text)
    with pytest.raises(ManifestError) as error:
        read_manifest_table(ManifestSpec(path=str(manifest)))
    assert str(error.value).startswith(f"{manifest}: {message}")


def test_a_missing_manifest_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest .*nope.tsv does not exist"):
        read_manifest_table(ManifestSpec(path=str(tmp_path / "nope.tsv")))
