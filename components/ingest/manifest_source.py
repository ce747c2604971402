"""The files of a manifest source, each with exactly the labels a `.labels.json` sidecar would give it.

A row's columns become labels under their own names (or the names `label_columns` gives them), typed like
the sidecars of the task families: `transcript`, `caption`, `split`, `task_family` are text, `speaker`
text or an integer, `qa` a list of {question, answer, choices}. Flat `question`/`answer`/`choices`
columns become one `qa` entry, and rows that name the same file add their questions to it, so a
question-per-row VQA table and a sidecar with a `qa` list give the same sample. In CSV/TSV cells,
`choices` and `qa` are written as JSON. A row whose file does not exist is kept with a quarantine reason;
a row that cannot be read raises `ManifestError` naming the file, the line, the field and the fix.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass

import fsspec
from pydantic import BaseModel, ConfigDict, ValidationError

from components.ingest.manifest_table import ManifestError, ManifestRow, read_manifest_table
from components.specs.dataset import ManifestFormat, ManifestSpec

_JSON_IN_TEXT_CELLS = ("choices", "qa")  # list-valued labels, written as JSON in CSV/TSV cells
_EXPECTED = {
    "speaker": "text or an integer",
    "choices": 'a list of strings, e.g. ["left", "right"]',
    "qa": 'a list of {"question": ..., "answer": ..., "choices": [...]}',
}


class _QuestionAnswer(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    question: str
    answer: str
    choices: list[str] | None = None
    type: str | None = None  # the kind of question (evaluation reports scores per type)


class _TypedLabels(BaseModel):
    """The label keys the task families and evaluation read, with the types their sidecars hold."""

    model_config = ConfigDict(extra="allow", strict=True)
    task_family: str | None = None
    split: str | None = None
    transcript: str | None = None
    caption: str | None = None
    speaker: str | int | None = None
    question: str | None = None
    answer: str | None = None
    choices: list[str] | None = None
    qa: list[_QuestionAnswer] | None = None


_ITEM_FIELDS = set(_QuestionAnswer.model_fields)


@dataclass(frozen=True)
class ManifestEntry:
    url: str  # what fsspec opens; an absolute path for local files
    relpath: str  # relative to the manifest's folder when the file lies under it, else the url
    labels: dict
    quarantine_reason: str | None  # set when the file is missing


def _is_json_value(value) -> bool:
    if isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, list):
        return all(_is_json_value(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json_value(v) for k, v in value.items())
    return False


def _label_columns(spec: ManifestSpec, columns: list[str] | None, row: ManifestRow) -> dict[str, str]:
    """label name -> column for this row."""
    if spec.label_columns is not None:
        return dict(spec.label_columns)
    return {c: c for c in (columns or row.values) if c != spec.path_column}


def _check_header(spec: ManifestSpec, columns: list[str]) -> None:
    named = {spec.path_column: "manifest.path_column"}
    named |= {column: f"manifest.label_columns.{label}" for label, column in (spec.label_columns or {}).items()}
    for column, field in named.items():
        if column not in columns:
            raise ManifestError(
                f"{spec.path}: line 1 (header), field '{column}': no such column (it has {columns}); "
                f"set {field} to one of them"
            )


def _row_labels(spec: ManifestSpec, columns: list[str] | None, row: ManifestRow) -> dict:
    label_to_column = _label_columns(spec, columns, row)
    raw = {label: row.values[column] for label, column in label_to_column.items() if column in row.values}
    text_cells = spec.table_format in (ManifestFormat.CSV, ManifestFormat.TSV)
    for label in _JSON_IN_TEXT_CELLS:
        if text_cells and label in raw:
            try:
                raw[label] = json.loads(raw[label])
            except json.JSONDecodeError:
                raise ManifestError(
                    f"{spec.path}: {row.where}, field '{label_to_column[label]}': {raw[label]!r} is not JSON; "
                    f"write {label} as {_EXPECTED[label]}"
                ) from None
    try:
        labels = _TypedLabels.model_validate(raw).model_dump(exclude_none=True)
    except ValidationError as exc:
        error = exc.errors()[0]
        label, inner = str(error["loc"][0]), error["loc"][1:]
        # qa[1].answer names the item; union tags such as speaker's "str" are left out
        at = "".join(
            f"[{p}]" if isinstance(p, int) else f".{p}" for p in inner if p in _ITEM_FIELDS or isinstance(p, int)
        )
        raise ManifestError(
            f"{spec.path}: {row.where}, field '{label_to_column[label]}'{f' at {label}{at}' if at else ''}: "
            f"{error['msg']} (given: {error['input']!r}); {label} must be {_EXPECTED.get(label, 'text')}"
        ) from None
    for label, value in labels.items():
        if not _is_json_value(value):
            raise ManifestError(
                f"{spec.path}: {row.where}, field '{label_to_column[label]}': a {type(value).__name__} is not a "
                "label value (text, numbers, booleans and lists of them are); cast the column or leave it out "
                "of manifest.label_columns"
            )
    return _with_question(spec, row, label_to_column, labels)


def _with_question(spec: ManifestSpec, row: ManifestRow, label_to_column: dict, labels: dict) -> dict:
    """Flat question/answer/choices/type labels become one `qa` entry, the shape QA sidecars use (`type`: the
    question's kind, which evaluation breaks scores down by)."""
    flat = {k: labels.pop(k) for k in ("question", "answer", "choices", "type") if k in labels}
    if not flat:
        return labels
    for needed in ("question", "answer"):
        if needed not in flat:
            raise ManifestError(
                f"{spec.path}: {row.where}, field '{label_to_column.get(needed, needed)}': empty, but the row has "
                f"{sorted(flat)}; a question needs its answer: fill both or neither"
            )
    labels["qa"] = [*labels.get("qa", []), flat]
    return labels


def _media_location(cell: str, manifest_path: str) -> tuple[str, str]:
    """(url, relpath) of a path cell: a URL or absolute path as given, else relative to the manifest's folder."""
    if "://" in cell:
        return cell, cell
    protocol, manifest_in_fs = fsspec.core.split_protocol(manifest_path)
    if protocol in (None, "file", "local"):
        base = os.path.dirname(os.path.abspath(manifest_in_fs))
        url = os.path.normpath(os.path.join(base, cell))
        relative = os.path.relpath(url, base)
        return url, url if relative.startswith("..") else relative
    url = f"{protocol}://{posixpath.normpath(posixpath.join(posixpath.dirname(manifest_in_fs), cell))}"
    return url, url if cell.startswith("/") else posixpath.normpath(cell)


def _exists(url: str) -> bool:
    fs, path = fsspec.core.url_to_fs(url)
    return fs.isfile(path)


def _merge(spec: ManifestSpec, first: tuple[ManifestRow, dict], row: ManifestRow, labels: dict) -> None:
    """Add a repeated file's questions to its first row's labels; any other label must agree."""
    first_row, merged = first
    for label in sorted((set(merged) | set(labels)) - {"qa"}):
        if merged.get(label) != labels.get(label):
            raise ManifestError(
                f"{spec.path}: {row.where} names the same file as {first_row.where} with another '{label}' "
                f"({labels.get(label)!r} vs {merged.get(label)!r}); rows of one file may differ only in "
                "question/answer/choices/type"
            )
    if "qa" in labels:
        merged["qa"] = [*merged.get("qa", []), *labels["qa"]]


def read_manifest_entries(spec: ManifestSpec) -> list[ManifestEntry]:
    """One entry per distinct file of the manifest, in the order the manifest first names them."""
    columns, rows = read_manifest_table(spec)
    if columns is not None:
        _check_header(spec, columns)
    by_url: dict[str, tuple[ManifestRow, dict]] = {}
    located: dict[str, str] = {}
    for row in rows:
        cell = row.values.get(spec.path_column)
        if not isinstance(cell, str) or not cell.strip():
            raise ManifestError(
                f"{spec.path}: {row.where}, field '{spec.path_column}': "
                + ("missing" if cell is None else f"{cell!r} is not a path")
                + "; every row needs the path of its media file (or set manifest.path_column)"
            )
        labels = _row_labels(spec, columns, row)
        url, relpath = _media_location(cell.strip(), spec.path)
        if url in by_url:
            _merge(spec, by_url[url], row, labels)
            continue
        by_url[url], located[url] = (row, labels), relpath
    entries = []
    for url, (row, labels) in by_url.items():
        missing = None if _exists(url) else f"missing file: {spec.path} {row.where} names {url}, which does not exist"
        entries.append(ManifestEntry(url, located[url], labels, missing))
    return entries
