"""Write manifest tables for tests: the same rows as CSV, TSV, JSONL or Parquet (by the file suffix)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def _cell(value) -> str:
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def write_manifest(path: Path, rows: list[dict]) -> Path:
    """List and object values become JSON in CSV/TSV cells, as the manifest source reads them."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".parquet":
        pq.write_table(pa.table({c: [row.get(c) for row in rows] for c in columns}), path)
    elif path.suffix == ".tsv":
        lines = ["\t".join(columns), *("\t".join(_cell(row.get(c)) for c in columns) for row in rows)]
        path.write_text("\n".join(lines) + "\n")
    else:
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(columns)
            writer.writerows([_cell(row.get(c)) for c in columns] for row in rows)
    return path
