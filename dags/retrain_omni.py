"""
### Retrain the omni model when new data lands (or weekly)

resolve the data versions -> run the curriculum pipeline (ending in evaluate -> gate -> promote) -> report
the gate decision -> notify. The pipeline runs one of two ways, chosen per run:

- **on this machine** (no KFP host): `omnistage retrain`, the pipeline through `kfp.local`;
- **on a Kubeflow Pipelines cluster** (connection `omnistage_kfp`, or the `kfp_host` param):
  `submit_to_kfp` (`omnistage pipeline submit`: one run per training key; a retry finds the run it already
  submitted, live or succeeded, instead of submitting again) -> `wait_for_kfp_run` (a sensor in
  reschedule mode polling `omnistage pipeline status`: no worker slot held between pokes; past
  `wait_timeout_s`, or failing for good, it cancels the KFP run) -> `finish_kfp_run` (marks the MLflow
  curriculum run completed, reports the gate decision).

**Data versions** come from the triggering `omnistage-dataset-versions` Asset events (their `extra` is the
version `ingest_multimodal` committed; the newest per dataset wins); a cron or manual run takes the
`dataset_version` param, else the version in `dataset_dir`. The training key, and so the idempotency
key, is built from those versions; a folder holding another version is refused, not trained under the
wrong key.

**Connection `omnistage_kfp`** (params `kfp_host` / `kfp_namespace` override it): `host` the API endpoint
(`https://kfp.example.com`; a bare host takes `schema`, default https), `port` optional, `password` the
bearer token (passed to the CLI in OMNISTAGE_KFP_TOKEN), `extra` `{"namespace": "..."}` for multi-user
KFP. Retry delays follow Airflow's `[core] default_task_retry_delay`.

Exercised here against a stand-in KFP API (tests/components/orchestration/kfp_standin.py), not a KFP
backend: submission, lookup by key, states, cancel. Not exercised: a real KFP server, its auth proxy,
the pipeline running on the cluster.

Params: `dataset`, `dataset_dir` (folder or s3:// URI), `dataset_version` (pin for non-Asset runs),
`curriculum`, `gate`, `tokenizer`, `pipeline_root` (local runs), `max_steps` (0: each stage's budget),
`force` (`--force` retrains a trained data version), `kfp_conn_id`, `kfp_host`, `kfp_namespace`,
`wait_timeout_s`, `poke_interval_s`, `webhook` (optional URL to POST the decision to).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, AssetOrTimeSchedule, Param, dag, task
from airflow.timetables.trigger import CronTriggerTimetable

from components.orchestration.runner import DATASET_VERSIONS_ASSET, REPO_ROOT, run_omnistage

DATASET_VERSIONS = Asset(**DATASET_VERSIONS_ASSET)
PIPELINE = ["--curriculum", "{curriculum}", "--gate", "{gate}", "--dataset", "{dataset}={dataset_dir}",
            "--tokenizer", "{tokenizer}", "--max-steps", "{max_steps}", "{force}"]  # fmt: skip


def _args(template: list[str], params: dict, versions: dict) -> list[str]:
    pins = [arg for name, version in versions.items() for arg in ("--dataset-version", f"{name}={version}")]
    return [arg.format(**params) for arg in template] + pins


@dag(
    dag_id="retrain_omni",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * 1", timezone="UTC"), assets=[DATASET_VERSIONS]
    ),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    default_args={"retries": 1},
    params={
        "dataset": Param("demo", type="string"),
        "dataset_dir": Param("work/datasets/demo", type="string"),
        "dataset_version": Param("", type="string"),
        "curriculum": Param("data_specs/curriculum/tiny.yaml", type="string"),
        "gate": Param("data_specs/gates/default.yaml", type="string"),
        "tokenizer": Param("work/tokenizer.json", type="string"),
        "pipeline_root": Param("work/pipeline", type="string"),
        "kfp_conn_id": Param("omnistage_kfp", type="string"),
        "kfp_host": Param("", type="string"),
        "kfp_namespace": Param("", type="string"),
        "wait_timeout_s": Param(12 * 3600, type="integer", minimum=1),
        "poke_interval_s": Param(60, type="integer", minimum=1),
        "max_steps": Param(0, type="integer", minimum=0),
        "force": Param("--no-force", enum=["--no-force", "--force"]),
        "webhook": Param("", type="string"),
        "repo": Param(str(REPO_ROOT), type="string"),
    },
    tags=["omnistage", "training"],
)
def retrain_omni():
    from components.orchestration.kfp_airflow import KfpRunSensor, kfp_command, kfp_target, versions_from_events

    @task
    def resolve_data_versions(params=None, triggering_asset_events=None) -> dict:
        """The Asset events' versions; else the `dataset_version` param; else the folder's (stats.json), when
        it was versioned (an unversioned folder pins nothing: retrain keys it as unversioned)."""
        versions = versions_from_events(triggering_asset_events or {})
        if not versions and params["dataset_version"]:
            versions = {params["dataset"]: params["dataset_version"]}
        if not versions:
            shown = run_omnistage(["dataset", "show", params["dataset_dir"], "--json"], cwd=params["repo"])
            if on_disk := (shown.get("version") or {}).get("version"):
                versions = {params["dataset"]: on_disk}
        print(f"data versions: {versions}")
        return versions

    @task.branch
    def choose_runner(params=None) -> str:
        return "submit_to_kfp" if kfp_target(params)[0] else "train_locally"

    @task(execution_timeout=timedelta(hours=12))
    def train_locally(versions: dict, params=None) -> dict:
        args = ["retrain", *_args(PIPELINE, params, versions), "--root", params["pipeline_root"], "--json"]
        return run_omnistage(args, cwd=params["repo"])

    @task(execution_timeout=timedelta(minutes=15))
    def submit_to_kfp(versions: dict, params=None) -> dict:
        return kfp_command(params, "pipeline", "submit", *_args(PIPELINE, params, versions))

    wait = KfpRunSensor(task_id="wait_for_kfp_run")

    @task
    def finish_kfp_run(run: dict, params=None) -> dict:
        if not run.get("run_id"):
            return run  # already trained (MLflow): submit reported the outcome
        pins = [a for name, v in run["data_versions"].items() for a in ("--dataset-version", f"{name}={v}")]
        return run_omnistage(["pipeline", "finish", "--training-key", run["training_key"], *pins, "--gate",
                              params["gate"]], cwd=params["repo"])  # fmt: skip

    @task(trigger_rule="none_failed_min_one_success")
    def report(ti=None) -> dict:
        """The gate decision in the task log and XCom (what `omnistage status` shows)."""
        outcome = next(o for o in ti.xcom_pull(task_ids=["train_locally", "finish_kfp_run"]) if o)
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

    versions = resolve_data_versions()
    local, submitted = train_locally(versions), submit_to_kfp(versions)
    finished = finish_kfp_run(submitted)
    summary = report()
    versions >> choose_runner() >> [local, submitted]
    submitted >> wait >> finished
    [local, finished] >> summary
    notify(summary)


retrain_omni()
