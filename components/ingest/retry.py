"""`omnistage ingest --retry-quarantined`: try again only the quarantined inputs that may pass now.

A quarantine reason is transient when the file could not be *read* (the content was never judged), and
permanent when the content was read and found wanting. The table below is the whole rule; reasons are
matched by the text before their first colon, which probe.py, decode.py and discover/manifest_source.py
produce. Everything not listed (not a media file, empty file, failed expectations, decode errors of
corrupt data, wrong modality, bad sidecar) is permanent and is not re-attempted.

A retry changes nothing that was already decided: existing shards keep their bytes and names; recovered
inputs are checked like any input (probe, exact and near duplicates against the accepted ones, the
expectation suite) and written to new shards numbered after the existing ones; manifest, quarantine,
duplicates, stats and card are rewritten. So the next dataset version differs only by what was recovered.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pandas as pd

from components.ingest import output_store as layout
from components.ingest.discover import discover_inputs
from components.ingest.executors import LOCAL, Executor, ExecutorConfig, open_executor
from components.ingest.output_store import OutputStore
from components.ingest.pipeline import (
    finalize,
    mark_near_duplicates,
    read_probe_table,
    spec_digest,
    table_records,
    validate_and_publish,
    write_plan,
    write_probe_table,
)
from components.ingest.probe import ProbeResult, probe_input
from components.ingest.samples import estimate_sample_bytes
from components.ingest.shard_writer import write_planned_shards
from components.ingest.shards import load_result, plan_shards, save_result
from components.ingest.splits import assign_split
from components.specs.dataset import DatasetSpec

log = logging.getLogger(__name__)

TRANSIENT_REASONS = {
    "unreadable file": "an I/O error or timeout while reading: storage not synced yet, a dropped mount, a network",
    "missing file": "a manifest row whose file did not exist yet: an upload not finished",
}


def is_transient(reason) -> bool:
    return isinstance(reason, str) and reason.split(":", 1)[0].strip() in TRANSIENT_REASONS


def retry_quarantined(
    spec: DatasetSpec, out: str | Path, workers: int = 1, executor: ExecutorConfig | Executor = LOCAL
) -> dict:
    """Re-attempt the transient quarantines of a finished ingestion in `out`; returns the new stats."""
    with OutputStore(out) as store:
        return _retry_quarantined(spec, store, workers, executor)


def _retry_quarantined(
    spec: DatasetSpec, store: OutputStore, workers: int, executor: ExecutorConfig | Executor
) -> dict:
    out = store.location
    if not store.exists(layout.STATS):
        raise FileNotFoundError(f"{out} holds no finished ingestion (stats.json): run omnistage ingest first")
    plan = json.loads(store.read_bytes(layout.PLAN))
    if plan["spec_digest"] != spec_digest(spec):
        raise ValueError(f"{out} was ingested with another version of spec '{spec.name}': ingest it again instead")
    with open_executor(executor, workers) as pool:  # one Ray start for re-probing and writing
        return _retry(spec, store, plan, pool)


def _retry(spec: DatasetSpec, store: OutputStore, plan: dict, pool: Executor) -> dict:
    table = read_probe_table(store)
    results = [load_result(store, s["name"]) for s in plan["shards"]]
    decode_failed = {f["sha256"]: f["reason"] for r in results for f in r.failed}
    in_shards = (table.status == "ok") & ~table.sha256.isin(list(decode_failed))
    failed_reason = table.sha256.map(decode_failed)
    reason = table.reason.where(table.status == "quarantined", failed_reason.where(table.status == "ok"))
    retry = reason.map(is_transient).astype(bool)
    inputs = {item.url: item for item in discover_inputs(spec)}
    kept = in_shards.copy()  # grows with each recovered input, so two equal ones are caught too
    retry &= table.path.isin(list(inputs))  # no longer listed by the spec: left as it was
    jobs = [(inputs[table.at[i, "path"]], spec.near_duplicates.enabled) for i in table.index[retry]]
    probes = pool.map_ordered(probe_input, jobs, threads_suffice=True)
    for i, probe in zip(table.index[retry], probes):  # applied in table order, as the probes were listed
        _apply_probe(table, i, probe, inputs[table.at[i, "path"]], spec, kept)
    recovered = retry & (table.status == "ok")
    if recovered.any():
        _validate(table, recovered, spec, store)
        if spec.near_duplicates.enabled:
            mark_near_duplicates(table, spec, candidates=recovered, originals=in_shards)
        recovered &= table.status == "ok"
    for result in results:  # a retried decode failure is decided anew: in a new shard or in quarantine
        result.failed = [f for f in result.failed if not retry[table.sha256 == f["sha256"]].any()]
    new_shards = _plan_and_write(spec, store, plan, table, recovered, pool)
    write_probe_table(store, table)
    for result in results:
        result.plan_digest = plan["digest"]  # same members and bytes; the plan they belong to grew
        save_result(store, result)
    stats = finalize(spec, store, table, results + [load_result(store, s["name"]) for s in new_shards])
    stats["retry"] = {
        "retried": int(retry.sum()),
        "recovered": int(recovered.sum()),
        "still_quarantined": int((retry & (table.status == "quarantined")).sum()),
        "duplicates": int((retry & (table.status == "duplicate")).sum()),
        "not_retried_permanent": int((reason.notna() & ~retry).sum()),
        "new_shards": [s["name"] for s in new_shards],
    }
    store.write_bytes(layout.STATS, json.dumps(stats, indent=2, sort_keys=True).encode())
    log.info("retry of quarantined inputs: %s", stats["retry"])
    return stats


def _apply_probe(table: pd.DataFrame, i, probe: ProbeResult, item, spec: DatasetSpec, kept: pd.Series) -> None:
    for key, value in probe.as_row().items():
        table.at[i, key] = value
    same = kept & (table.sha256 == probe.sha256)
    if probe.reason is not None:
        table.at[i, "status"] = "quarantined"
    elif same.any():
        table.loc[i, ["status", "duplicate_of", "duplicate_kind"]] = ["duplicate", table.path[same].iloc[0], "exact"]
    else:
        kept[i] = True
        table.at[i, "status"] = "ok"
        table.at[i, "split"] = assign_split(probe.sha256, item.labels, spec)
        table.at[i, "estimated_bytes"] = estimate_sample_bytes(probe, spec)


def _validate(table: pd.DataFrame, rows: pd.Series, spec: DatasetSpec, store: OutputStore) -> None:
    outcome = validate_and_publish(table[rows].drop(columns=["reason"]), spec, store)
    for sha, reasons in outcome.row_failures.items():
        mask = rows & (table.sha256 == sha)
        table.loc[mask, "status"] = "quarantined"
        table.loc[mask, "reason"] = "; ".join(reasons)


def _plan_and_write(
    spec: DatasetSpec, store: OutputStore, plan: dict, table: pd.DataFrame, rows: pd.Series, pool: Executor
) -> list[dict]:
    """Plan the recovered rows into shards after the existing ones, write them, update plan.json."""
    recovered = table[rows].sort_values("sha256")
    items = list(zip(recovered.sha256, recovered.estimated_bytes.astype(int)))
    plans = plan_shards(items, spec.shard_max_bytes, first_index=len(plan["shards"]))
    new = [{"name": p.name, "members": p.members, "estimated_bytes": p.estimated_bytes} for p in plans]
    plan["shards"] += new
    plan.pop("digest")
    plan["digest"] = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]
    rows_by_sha = {r["sha256"]: r for r in table_records(recovered)}
    labels = {item.url: item.labels for item in discover_inputs(spec)}
    write_planned_shards(spec, new, rows_by_sha, labels, store, plan["digest"], pool.workers, pool)
    write_plan(store, plan)
    return new
