"""The ingestion pipeline: spec + raw files -> `OUT/shards/*.tar`, manifest, quarantine, stats, card.

Two phases, so a DAG can run them as separate tasks and a crash in the slow one loses nothing:

- `probe_and_plan`: discover, hash, probe and fingerprint every input, drop exact duplicates (same
  sha256), validate with Great Expectations, drop near duplicates (re-encoded, resized or trimmed copies;
  components/ingest/near_duplicates.py), plan the shards. Writes `OUT/.work/probe.parquet` (fingerprints
  included) and `OUT/.work/plan.json`.
- `write_shards`: decode and write every planned shard that is not finished yet, then the reports.

`out` is a local folder or an object-storage URI (`s3://bucket/prefix`); everything is written through
an `OutputStore` (components/ingest/output_store.py), which publishes each file only when complete.

Both phases run their per-input work on an executor (components/ingest/executors.py: the local pool by
default, or Ray); the plan fixes the order of everything written, so the outputs do not depend on it.

Every input ends in exactly one place: a shard, `quarantine.jsonl` (with a reason) or `duplicates.jsonl`
(`kind` exact or near, with the original it copies).

Near duplicates are matched after validation, so a copy of a file that failed an expectation is kept,
and in a fixed order (`_original_first`): train split first, then longer, then larger, then by path. The
original of a near pair is thus the train item when the pair straddles the split, and the eval copy is
dropped: no eval item keeps a copy in the training data of the same ingestion.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.ingest import card
from components.ingest import output_store as layout
from components.ingest.discover import InputFile, discover_inputs
from components.ingest.executors import LOCAL, Executor, ExecutorConfig, open_executor
from components.ingest.fingerprint import Fingerprint
from components.ingest.near_duplicates import select_near_duplicates
from components.ingest.output_store import OutputStore
from components.ingest.probe import ProbeResult, probe_input
from components.ingest.samples import estimate_sample_bytes
from components.ingest.shard_writer import write_planned_shards
from components.ingest.shards import (
    SHARD_SUFFIX,
    ShardResult,
    is_shard_done,
    load_result,
    plan_shards,
    remove_stale_temporaries,
)
from components.ingest.splits import assign_split, check_group_disjoint
from components.ingest.validate import ValidationOutcome, validate_manifest
from components.progress import track
from components.specs.dataset import DatasetSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestPaths:
    """The output layout of a local output folder as paths (DVC and `dataset show` read local folders)."""

    out: Path

    @property
    def shards(self) -> Path:
        return self.out / layout.SHARDS

    @property
    def work(self) -> Path:
        return self.out / layout.WORK

    @property
    def probe_table(self) -> Path:
        return self.out / layout.PROBE_TABLE

    @property
    def plan(self) -> Path:
        return self.out / layout.PLAN

    @property
    def manifest(self) -> Path:
        return self.out / layout.MANIFEST

    @property
    def quarantine(self) -> Path:
        return self.out / layout.QUARANTINE

    @property
    def duplicates(self) -> Path:
        return self.out / layout.DUPLICATES

    @property
    def stats(self) -> Path:
        return self.out / layout.STATS

    @property
    def validation(self) -> Path:
        return self.out / layout.VALIDATION


def spec_digest(spec: DatasetSpec) -> str:
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:16]


def read_probe_table(store: OutputStore) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(store.read_bytes(layout.PROBE_TABLE)))


def write_probe_table(store: OutputStore, table: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    store.write_bytes(layout.PROBE_TABLE, buffer.getvalue())


def write_plan(store: OutputStore, plan: dict) -> None:
    store.write_bytes(layout.PLAN, json.dumps(plan, indent=1, sort_keys=True).encode())


def write_jsonl(store: OutputStore, rel: str, records: list[dict]) -> None:
    store.write_bytes(rel, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode())


def _checked_inputs(spec: DatasetSpec) -> list[InputFile]:
    """The spec's inputs; fails early when a source is missing or empty, or labels break the split rule."""
    inputs = discover_inputs(spec)
    if not inputs:
        raise ValueError(f"dataset '{spec.name}': no input files found under {[s.location for s in spec.sources]}")
    check_group_disjoint(inputs, spec)
    return inputs


def discover_summary(
    spec: DatasetSpec, out: str | Path, workers: int = 1, executor: ExecutorConfig | Executor = LOCAL
) -> dict:
    """Count the inputs per source (cheap: no hashing); fails early on what `_checked_inputs` checks.
    Runs nothing in parallel: `workers` and `executor` only keep the phases' signatures alike."""
    inputs = _checked_inputs(spec)
    per_source: dict[str, int] = {}
    for item in inputs:
        per_source[item.source] = per_source.get(item.source, 0) + 1
    return {"dataset": spec.name, "inputs": len(inputs), "per_source": per_source}


def probe_and_plan(
    spec: DatasetSpec, out: str | Path, workers: int = 1, executor: ExecutorConfig | Executor = LOCAL
) -> dict:
    """Phase 1. Returns a summary: inputs, probed-ok, quarantined so far, duplicates, shards planned."""
    with OutputStore(out) as store:
        return _probe_and_plan(spec, store, workers, executor)


def _probe_and_plan(spec: DatasetSpec, store: OutputStore, workers: int, executor: ExecutorConfig | Executor) -> dict:
    inputs = _checked_inputs(spec)
    by_url: dict[str, InputFile] = {item.url: item for item in inputs}
    fingerprints = spec.near_duplicates.enabled
    with open_executor(executor, workers) as pool:
        results = pool.map_ordered(probe_input, [(item, fingerprints) for item in inputs], threads_suffice=True)
        probes: list[ProbeResult] = list(track(results, "probe + hash", total=len(inputs), unit="files"))
    rows = []
    seen: dict[str, str] = {}
    for probe in sorted(probes, key=lambda p: p.path):
        item = by_url[probe.path]
        row = probe.as_row()
        row.update(status="ok", duplicate_of=None, task_family=item.task_family, split=None)
        row.update(duplicate_kind=None, match_offset_s=None, match_evidence=None)
        if probe.reason is None and probe.sha256 in seen:
            row.update(status="duplicate", duplicate_of=seen[probe.sha256], duplicate_kind="exact")
        elif probe.reason is not None:
            row.update(status="quarantined")
        else:
            seen[probe.sha256] = probe.path
            row["split"] = assign_split(probe.sha256, item.labels, spec)
            row["estimated_bytes"] = estimate_sample_bytes(probe, spec)
        rows.append(row)
    table = pd.DataFrame(rows)
    ok = table[table.status == "ok"]
    outcome = validate_and_publish(ok.drop(columns=["reason"]), spec, store)
    if outcome.table_failures:
        raise ValueError(f"dataset '{spec.name}': the batch fails table-level expectations: {outcome.table_failures}")
    for sha, reasons in outcome.row_failures.items():
        mask = (table.sha256 == sha) & (table.status == "ok")
        table.loc[mask, "status"] = "quarantined"
        table.loc[mask, "reason"] = "; ".join(reasons)
    if spec.near_duplicates.enabled:
        mark_near_duplicates(table, spec)
    write_probe_table(store, table)
    accepted = table[table.status == "ok"].sort_values("sha256")
    plans = plan_shards(list(zip(accepted.sha256, accepted.estimated_bytes.astype(int))), spec.shard_max_bytes)
    plan = {
        "dataset": spec.name,
        "spec_digest": spec_digest(spec),
        "shards": [{"name": p.name, "members": p.members, "estimated_bytes": p.estimated_bytes} for p in plans],
    }
    plan["digest"] = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]
    write_plan(store, plan)
    summary = {
        "inputs": len(table),
        "probed_ok": int((table.status == "ok").sum()),
        "quarantined": int((table.status == "quarantined").sum()),
        "duplicates": int((table.status == "duplicate").sum()),
        "near_duplicates": int((table.duplicate_kind == "near").sum()),
        "shards_planned": len(plans),
        "data_docs": _data_docs_url(store, outcome.data_docs),
    }
    log.info("probe + validate: %s", summary)
    return summary


def validate_and_publish(frame: pd.DataFrame, spec: DatasetSpec, store: OutputStore) -> ValidationOutcome:
    """Run the expectation suite with its GX project in `validation/` (staged, then uploaded for a URI)."""
    outcome = validate_manifest(frame, spec, store.staged_dir(layout.VALIDATION))
    shutil.rmtree(store.staged_dir(layout.VALIDATION) / "gx" / "uncommitted" / "validations_tmp", ignore_errors=True)
    store.publish_tree(layout.VALIDATION)
    return outcome


def _data_docs_url(store: OutputStore, local_index: Path | None) -> str | None:
    if local_index is None:
        return None
    return store.url(Path(local_index).relative_to(store.staging).as_posix())


def mark_near_duplicates(
    table: pd.DataFrame, spec: DatasetSpec, candidates: pd.Series | None = None, originals: pd.Series | None = None
) -> int:
    """Mark `candidates` rows (default: every accepted row) that near-duplicate an earlier one as duplicates,
    in place; returns how many. `originals` rows (a retry: those already in shards) are compared with
    first and never marked themselves."""
    ok = table.status == "ok"
    candidates = ok if candidates is None else candidates & ok
    originals = pd.Series(False, index=table.index) if originals is None else originals & ~candidates

    def items(mask: pd.Series) -> list:
        order = sorted(table.index[mask], key=lambda i: _original_first(table.loc[i]))
        return [(i, table.at[i, "modality"], _fingerprint(table.at[i, "fingerprint"])) for i in order]

    copies = select_near_duplicates(items(candidates), spec.near_duplicates, kept=items(originals))
    for i, match in copies.items():
        original = table.at[match.original, "path"]
        table.loc[i, ["status", "duplicate_of", "duplicate_kind"]] = ["duplicate", original, "near"]
        table.loc[i, ["match_offset_s", "match_evidence"]] = [match.offset_s, match.evidence]
    return len(copies)


def _original_first(row: pd.Series) -> tuple:
    """Sort key: of a near pair, the earlier row stays. Train before eval (so an eval copy of a train
    clip is the one dropped), then the longer clip (a trim is the copy), the larger picture (a downscale
    is the copy), then the path, so that ties break the same way on every run."""
    pixels = (row["width"] or 0) * (row["height"] or 0) if pd.notna(row["width"]) else 0
    return (row["split"] != "train", -round(row["duration_s"] or 0.0, 1), -pixels, row["path"])


def _fingerprint(data) -> Fingerprint | None:
    return Fingerprint.from_bytes(data) if isinstance(data, bytes) else None


def table_records(frame: pd.DataFrame) -> list[dict]:
    """Rows as dicts with pandas' NaN turned back into None (parquet round trips lose the difference)."""
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


def write_shards(
    spec: DatasetSpec, out: str | Path, workers: int = 1, executor: ExecutorConfig | Executor = LOCAL
) -> dict:
    """Phase 2. Writes the unfinished shards, then manifest, quarantine, duplicates, stats and card."""
    with OutputStore(out) as store:
        return _write_shards(spec, store, workers, executor)


def _write_shards(spec: DatasetSpec, store: OutputStore, workers: int, executor: ExecutorConfig | Executor) -> dict:
    if not store.exists(layout.PLAN):
        raise FileNotFoundError(
            f"{store.url(layout.PLAN)} is missing: run the probe phase first (omnistage ingest --phase probe)"
        )
    plan = json.loads(store.read_bytes(layout.PLAN))
    if plan["spec_digest"] != spec_digest(spec):
        raise ValueError(
            f"{store.url(layout.PLAN)} was planned with another version of spec '{spec.name}': "
            "run the probe phase again"
        )
    table = read_probe_table(store)
    stale = remove_stale_temporaries(store.staged_dir(layout.SHARDS))
    if stale:
        log.info("removed %d partial shard(s) left by an interrupted run", stale)
    planned = {s["name"] for s in plan["shards"]}
    for leftover in store.list(layout.SHARDS, SHARD_SUFFIX):
        if leftover not in planned:
            store.remove(f"{layout.SHARDS}/{leftover}")
    rows_by_sha = {r["sha256"]: r for r in table_records(table[table.status == "ok"])}
    labels = {item.url: item.labels for item in discover_inputs(spec)}
    todo, reused = [], 0
    for shard in plan["shards"]:
        # A finished shard of another plan (the inputs or spec changed) is rewritten, never reused.
        if is_shard_done(store, shard["name"]):
            if load_result(store, shard["name"]).plan_digest == plan["digest"]:
                reused += 1
                continue
        todo.append(shard)
    if reused:
        log.info("resuming: %d of %d shard(s) already finished, skipped", reused, len(plan["shards"]))
    write_planned_shards(spec, todo, rows_by_sha, labels, store, plan["digest"], workers, executor)
    results = [load_result(store, s["name"]) for s in plan["shards"]]
    return finalize(spec, store, table, results)


def finalize(spec: DatasetSpec, store: OutputStore, table: pd.DataFrame, results: list[ShardResult]) -> dict:
    """Write manifest, quarantine and duplicates lists, stats and the dataset card from the shard results."""
    failed = {f["sha256"]: f["reason"] for r in results for f in r.failed}
    written = {w["sha256"]: (r.name, w["key"], w["num_frames"]) for r in results for w in r.written}
    manifest_rows, quarantine = [], []
    for row in table_records(table.sort_values("path")):
        if row["status"] == "quarantined" or row["sha256"] in failed and row["status"] == "ok":
            reason = row["reason"] if row["status"] == "quarantined" else failed[row["sha256"]]
            quarantine.append({"path": row["path"], "sha256": row["sha256"], "source": row["source"], "reason": reason})
        elif row["status"] == "ok":
            shard, key, num_frames = written[row["sha256"]]
            manifest_rows.append(_manifest_row(row, shard, key, num_frames))
    manifest = pa.Table.from_pylist(sorted(manifest_rows, key=lambda r: (r["shard"], r["key"])), schema=MANIFEST_SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(manifest, buffer, compression="zstd")
    store.write_bytes(layout.MANIFEST, buffer.getvalue())
    write_jsonl(store, layout.QUARANTINE, quarantine)
    duplicates = [_duplicate_entry(r) for r in table_records(table[table.status == "duplicate"].sort_values("path"))]
    write_jsonl(store, layout.DUPLICATES, duplicates)
    stats = {
        "dataset": spec.name,
        "inputs": len(table),
        "accepted": len(manifest_rows),
        "quarantined": len(quarantine),
        "duplicates": len(duplicates),
        "duplicates_by_kind": _counts(duplicates, "kind"),
        "shards": len(results),
        "shard_bytes": sum(r.num_bytes for r in results),
        "media_seconds": round(sum((r["duration"] or 0.0) for r in manifest_rows), 3),
        "by_modality": _counts(manifest_rows, "modality"),
        "by_split": _counts(manifest_rows, "split"),
        "by_task_family": _counts(manifest_rows, "task_family"),
        "quarantine_reasons": _counts([{"r": q["reason"].split(":")[0]} for q in quarantine], "r"),
    }
    if stats["accepted"] + stats["quarantined"] + stats["duplicates"] != stats["inputs"]:
        raise AssertionError(f"ingestion lost inputs: {stats}")  # internal invariant, never a user error
    store.write_bytes(layout.STATS, json.dumps(stats, indent=2, sort_keys=True).encode())
    card.write_dataset_card(store, spec, stats, manifest_rows)
    return stats


def _duplicate_entry(row: dict) -> dict:
    entry = {"path": row["path"], "sha256": row["sha256"], "duplicate_of": row["duplicate_of"]}
    entry["kind"] = row.get("duplicate_kind") or "exact"  # probe tables written before near matching
    if entry["kind"] == "near":
        entry.update(offset_s=row["match_offset_s"], evidence=row["match_evidence"])
    return entry


def _counts(rows: list[dict], field: str) -> dict:
    counts: dict[str, int] = {}
    for row in rows:
        counts[str(row[field])] = counts.get(str(row[field]), 0) + 1
    return dict(sorted(counts.items()))


MANIFEST_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("relpath", pa.string()),
        ("source", pa.string()),
        ("sha256", pa.string()),
        ("shard", pa.string()),
        ("key", pa.string()),
        ("modality", pa.string()),
        ("task_family", pa.string()),
        ("split", pa.string()),
        ("duration", pa.float64()),
        ("streams", pa.string()),
        ("num_frames", pa.int32()),
        ("size_bytes", pa.int64()),
        ("fingerprint", pa.binary()),  # components.ingest.fingerprint; the contamination check reads it
    ]
)


def _manifest_row(row: dict, shard: str, key: str, num_frames: int) -> dict:
    streams = []
    if row.get("video_codec") and row["modality"] in ("video", "image"):
        streams.append(f"{row['modality']}:{row['video_codec']} {int(row['width'])}x{int(row['height'])}")
    if row.get("audio_codec"):
        streams.append(f"audio:{row['audio_codec']} {int(row['sample_rate'] or 0)}Hz")
    if row["modality"] == "text":
        streams.append("text")
    duration = row["duration_s"]
    return {
        "path": row["path"],
        "relpath": row["relpath"],
        "source": row["source"],
        "sha256": row["sha256"],
        "shard": shard,
        "key": key,
        "modality": row["modality"],
        "task_family": row["task_family"],
        "split": row["split"],
        "duration": duration,
        "streams": ", ".join(streams),
        "num_frames": int(num_frames),
        "size_bytes": int(row["size_bytes"]),
        "fingerprint": row.get("fingerprint"),
    }


def ingest_dataset(
    spec: DatasetSpec, out: str | Path, workers: int = 1, executor: ExecutorConfig | Executor = LOCAL
) -> dict:
    """Both phases: what `omnistage ingest` runs. Both share one executor (one Ray start, not two)."""
    with open_executor(executor, workers) as pool:
        probe_and_plan(spec, out, workers, pool)
        return write_shards(spec, out, workers, pool)
