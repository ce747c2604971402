"""
### Retrain the omni model when new data lands (or weekly)

resolve the data version -> run the curriculum pipeline, which ends in evaluate -> gate -> promote
(`kfp.local` here; on a cluster the compiled pipeline is submitted to the KFP API and waited for) ->
report the gate decision -> notify.

Scheduled on a new event of the `omnistage-dataset-versions` Asset (published by `ingest_multimodal`) or a
weekly cron, whichever comes first. Idempotent: a data version already trained with the same curriculum
and gate is skipped unless the run is triggered with `force: true`; `max_active_runs=1`.

Every step is one `omnistage` CLI command through `components.orchestration.runner` (local subprocess of
the project venv, or a KubernetesPodOperator in the project image with `OMNISTAGE_RUNNER=kubernetes`).
Params: `dataset` and `dataset_dir` (the ingested dataset), `curriculum`, `gate`, `tokenizer`, `kfp_host`
(empty: kfp.local), `pipeline_root` (stage checkpoints, local runs), `max_steps` (0: each stage's
budget), `force` (`--force` retrains a trained data version), `webhook` (optional URL to POST the
decision to).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, AssetOrTimeSchedule, Param, dag, task
from airflow.timetables.trigger import CronTriggerTimetable

from components.orchestration.runner import DATASET_VERSIONS_ASSET, REPO_ROOT, omnistage_step

DATASET_VERSIONS = Asset(**DATASET_VERSIONS_ASSET)
RETRAIN = ["retrain", "--curriculum", "{curriculum}", "--gate", "{gate}", "--dataset", "{dataset}={dataset_dir}",
           "--tokenizer", "{tokenizer}", "--root", "{pipeline_root}", "--max-steps", "{max_steps}",
           "--kfp-host", "{kfp_host}", "{force}", "--json"]  # fmt: skip


@dag(
    dag_id="retrain_omni",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * 1", timezone="UTC"), assets=[DATASET_VERSIONS]
    ),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
    params={
        "dataset": Param("demo", type="string"),
        "dataset_dir": Param("work/datasets/demo", type="string"),
        "curriculum": Param("data_specs/curriculum/tiny.yaml", type="string"),
        "gate": Param("data_specs/gates/default.yaml", type="string"),
        "tokenizer": Param("work/tokenizer.json", type="string"),
        "pipeline_root": Param("work/pipeline", type="string"),
        "kfp_host": Param("", type="string"),
        "max_steps": Param(0, type="integer", minimum=0),
        "force": Param("--no-force", enum=["--no-force", "--force"]),
        "webhook": Param("", type="string"),
        "repo": Param(str(REPO_ROOT), type="string"),
    },
    tags=["omnistage", "training"],
)
def retrain_omni():
    resolve = omnistage_step("resolve_data_version", ["dataset", "show", "{dataset_dir}", "--json"])
    train = omnistage_step("run_curriculum_pipeline", RETRAIN, execution_timeout=timedelta(hours=12))

    @task
    def report(outcome: dict) -> dict:
        """The gate decision in the task log and XCom (what `omnistage status` shows)."""
        decision = outcome.get("last_decision") or {}
        champion = outcome.get("champion") or {}
        summary = {"trained": outcome.get("trained"), "skipped_because": outcome.get("skipped_because"),
                   "data_versions": outcome.get("data_versions"), "decision": decision.get("status"),
                   "reasons": decision.get("reasons", []), "champion_version": champion.get("version")}  # fmt: skip
        print(f"retrain: {summary}")
        return summary

    @task
    def notify(summary: dict, params: dict | None = None) -> None:
        import json
        import urllib.request

        print(f"omnistage retrain finished: decision={summary['decision']} champion=v{summary['champion_version']}")
        if params and params.get("webhook"):
            body = json.dumps({"text": f"omnistage: {summary}"}).encode()
            request = urllib.request.Request(params["webhook"], data=body, headers={"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=10)

    resolve >> train
    notify(report(train))


retrain_omni()
