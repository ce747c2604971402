"""Read a manifest table (CSV, TSV, JSONL or Parquet) into rows that know where in the file they came from.

Each row carries its place (`line N` in a text file, `row N` in Parquet), so an error about it can name
the file, the place and the field. Cells of CSV and TSV are strings; JSONL and Parquet keep their types.
An empty cell or a null means "no value" and is dropped, also inside nested objects (Parquet fills a
struct's absent fields with nulls).

    columns, rows = read_manifest_table(source.manifest)
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

import fsspec
import pyarrow.parquet as pq

from components.specs.dataset import ManifestFormat, ManifestSpec


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file, the line, the field and the fix."""


def _without_nulls(value):
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


@dataclass(frozen=True)
class ManifestRow:
    where: str  # "line 7" (CSV, TSV, JSONL) or "row 7" (Parquet)
    values: dict  # column -> value, without empty cells


def _read_bytes(url: str) -> bytes:
    try:
        with fsspec.open(url, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"manifest {url} does not exist") from None


def _text(url: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")  # spreadsheet exports often start with a byte-order mark
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{url}: not UTF-8 text ({exc}); save the manifest as UTF-8") from None


def _delimited_rows(url: str, text: str, table_format: ManifestFormat) -> tuple[list[str], list[ManifestRow]]:
    # TSV as corpora ship it (Common Voice, LibriTTS): tabs separate, quotes are text. CSV: RFC 4180 quoting.
    options = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if table_format is ManifestFormat.TSV else {}
    reader = csv.reader(io.StringIO(text, newline=""), **options)
    header = next(reader, None)
    if not header:
        raise ManifestError(f"{url}: line 1: no header row; the first line names the columns")
    rows, previous_end = [], reader.line_num
    for cells in reader:
        line, previous_end = previous_end + 1, reader.line_num
        if not any(cells):
            continue
        if len(cells) != len(header):
            raise ManifestError(
                f"{url}: line {line}: {len(cells)} cells, but the header has {len(header)} columns; "
                + ("a cell must not hold a tab" if options else 'quote cells that hold a comma: "a, b"')
            )
        rows.append(ManifestRow(f"line {line}", {k: v for k, v in zip(header, cells) if v != ""}))
    return header, rows


def _jsonl_rows(url: str, text: str) -> list[ManifestRow]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ManifestError(
                f"{url}: line {number}: not valid JSON ({exc.msg} at column {exc.colno}); "
                "each line must be one complete JSON object"
            ) from None
        if not isinstance(values, dict):
            raise ManifestError(f"{url}: line {number}: a {type(values).__name__}, not a JSON object {{...}}")
        rows.append(ManifestRow(f"line {number}", _without_nulls(values)))
    return rows


def _parquet_rows(url: str, data: bytes) -> tuple[list[str], list[ManifestRow]]:
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise ManifestError(f"{url}: not a readable Parquet file: {exc}") from None
    rows = [
        ManifestRow(f"row {index}", _without_nulls(record)) for index, record in enumerate(table.to_pylist(), start=1)
    ]
    return table.column_names, rows


def read_manifest_table(spec: ManifestSpec) -> tuple[list[str] | None, list[ManifestRow]]:
    """The columns (None for JSONL, whose rows each name their own) and the rows, in file order."""
    data = _read_bytes(spec.path)
    if spec.table_format is ManifestFormat.PARQUET:
        return _parquet_rows(spec.path, data)
    text = _text(spec.path, data)
    if spec.table_format is ManifestFormat.JSONL:
        return None, _jsonl_rows(spec.path, text)
    return _delimited_rows(spec.path, text, spec.table_format)
