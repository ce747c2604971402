"""Decode samples in parallel and write them, in plan order, into atomically published shards.

Samples (not shards) are the unit of parallel work, so a dataset of one shard still uses every worker.
Workers (a local process pool or Ray tasks: components/ingest/executors.py) return each sample's files;
this process writes them in the planned order, so the bytes depend neither on the number of workers nor
on the engine. At most `2 * workers` samples are in flight, which bounds memory. Each worker decodes
single-threaded: on a busy machine frame threads cost CPU for no throughput.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

from components.ingest.decode import DecodeError
from components.ingest.executors import LOCAL, Executor, ExecutorConfig, open_executor
from components.ingest.output_store import OutputStore
from components.ingest.probe import ProbeResult
from components.ingest.samples import build_sample
from components.ingest.shards import DeterministicTarWriter, ShardResult, commit_shard, staged_shard
from components.progress import track
from components.specs.dataset import DatasetSpec


@functools.lru_cache(maxsize=4)
def _spec(spec_json: str) -> DatasetSpec:
    return DatasetSpec.model_validate_json(spec_json)


def _build(spec_json: str, row: dict, labels: dict) -> tuple[str, object]:
    """Worker body: ("ok", (key, files, num_frames)) or ("failed", reason)."""
    probe = ProbeResult(**{k: row[k] for k in ProbeResult.__dataclass_fields__})
    try:
        sample = build_sample(probe, labels, row["split"], row["task_family"], _spec(spec_json))
    except DecodeError as exc:
        return "failed", str(exc)
    return "ok", (sample.key, sample.files, sample.num_frames)


def _ordered_results(
    jobs: list[tuple], workers: int, executor: ExecutorConfig | Executor
) -> Iterator[tuple[str, object]]:
    if not jobs:  # every shard already finished: do not start a pool or a Ray for nothing
        return
    # The executor lives as long as this generator: the writer loop takes exactly len(jobs) results and
    # then closes it (on an error, dropping it closes it): the pool or a Ray started for this call stops.
    with open_executor(executor, workers) as pool:
        yield from pool.map_ordered(_build, jobs)


def write_planned_shards(
    spec: DatasetSpec,
    shards: list[dict],
    rows_by_sha: dict[str, dict],
    labels: dict[str, dict],
    store: OutputStore,
    plan_digest: str,
    workers: int = 1,
    executor: ExecutorConfig | Executor = LOCAL,
) -> None:
    """Write each of `shards` (plan entries: name + members) and publish it with its result record."""
    spec_json = spec.model_dump_json()
    jobs = [
        (spec_json, rows_by_sha[sha], labels.get(rows_by_sha[sha]["path"], {}))
        for shard in shards
        for sha in shard["members"]
    ]
    ordered = _ordered_results(jobs, workers, executor)
    results = track(ordered, "decode + write samples", total=len(jobs), unit="samples")
    for shard in shards:
        tmp = staged_shard(store, shard["name"])
        writer = DeterministicTarWriter(tmp)
        record = ShardResult(name=shard["name"], plan_digest=plan_digest)
        for sha in shard["members"]:
            status, payload = next(results)
            if status == "failed":
                record.failed.append({"sha256": sha, "reason": payload})
                continue
            key, files, num_frames = payload
            for name, data in files:
                writer.add(name, data)
            record.written.append({"sha256": sha, "key": key, "num_frames": num_frames})
        writer.close()
        record.num_bytes = tmp.stat().st_size
        commit_shard(tmp, record, store)
    ordered.close()  # stop the executor now rather than when the generator is collected
