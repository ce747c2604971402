"""
### Ingest multimodal media into versioned WebDataset shards

discover -> probe + validate (Great Expectations) -> write shards -> version (DVC) -> publish a new event
of the `omnistage-dataset-versions` Asset, on which the retraining DAG is scheduled.

Each step runs one `omnistage` CLI command through `components.orchestration.runner`: a local subprocess
of the project venv by default, a KubernetesPodOperator in the project image when
`OMNISTAGE_RUNNER=kubernetes`. Only small JSON summaries pass through XCom; the data stays in `out`.

Params: `spec` (dataset spec YAML), `out` (output folder inside the DVC repo, or an s3:// / gs:// URI),
`repo` (DVC repository root, default: this repository), `workers` (parallel workers), `ray_address`
(a Ray cluster for the probe and shard steps; empty: the Airflow connection `omnistage_ray` when it
exists, otherwise the local executor), `dvc_remote` (where the version step pushes; a bucket `out` is
copied into it by `dvc import-url --to-remote`; empty: the repository's default remote). With
`OMNISTAGE_RUNNER=kubernetes`, or a Ray cluster on other machines, `out` must be a bucket URI: the
steps' pods and the Ray workers share no volume. The schedule is daily unless `OMNISTAGE_INGEST_SCHEDULE`
(in the environment of the DAG processor) names another cadence, or `none` for triggered runs only.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import Asset, Param, dag, task

from components.orchestration.ray_cluster import RAY_EXECUTOR
from components.orchestration.runner import DATASET_VERSIONS_ASSET, REPO_ROOT, omnistage_step

DATASET_VERSIONS = Asset(**DATASET_VERSIONS_ASSET)
INGEST = ["ingest", "--spec", "{spec}", "--out", "{out}", "--json"]


@dag(
    dag_id="ingest_multimodal",
    # A cron expression or preset; "none" leaves only triggered runs (read when the DAG file is parsed).
    schedule=None if (cadence := os.environ.get("OMNISTAGE_INGEST_SCHEDULE", "@daily")) == "none" else cadence,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    params={
        "spec": Param("data_specs/datasets/demo.yaml", type="string"),
        "out": Param("work/datasets/demo", type="string"),
        "repo": Param(str(REPO_ROOT), type="string"),
        "workers": Param(2, type="integer", minimum=1),
        "dvc_remote": Param("", type="string", description="DVC remote URL; empty: the repository's default"),
        "ray_address": Param(
            "",
            type="string",
            description="Ray cluster (ray://host:10001 or host:6379); "
            "empty: the omnistage_ray connection if set, else local",
        ),
    },
    tags=["omnistage", "data"],
)
def ingest_multimodal():
    discover = omnistage_step("discover", [*INGEST, "--phase", "discover"])
    probe = omnistage_step("probe_and_validate", [*INGEST, "--phase", "probe", RAY_EXECUTOR])
    shard = omnistage_step(
        "write_shards",
        [*INGEST, "--phase", "shard", "--workers", "{workers}", RAY_EXECUTOR],
        execution_timeout=timedelta(hours=6),
    )
    version = omnistage_step(
        "version",
        ["dataset", "commit", "--spec", "{spec}", "--out", "{out}", "--repo", ".", "--remote", "{dvc_remote}"],
    )

    @task(outlets=[DATASET_VERSIONS])
    def publish(*, ti=None, outlet_events=None) -> dict:
        dataset_version = ti.xcom_pull(task_ids="version")
        outlet_events[DATASET_VERSIONS].extra = dataset_version
        return dataset_version

    discover >> probe >> shard >> version >> publish()


ingest_multimodal()
