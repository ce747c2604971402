"""The retrain DAG's data versions from its triggering Asset events, built the way Airflow's task runner
builds them (`TriggeringAssetEventsAccessor` over the events of the dag run). `airflow dags test` cannot
carry Asset events (it creates a manual run, deleting any existing one), so the DAG run tests pin the
version with the `dataset_version` param instead; this checks the event path in Airflow's venv."""

import json

from tests.dags.conftest import run_airflow_python

SCRIPT = """
import json
from datetime import datetime, timezone
from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult
from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor
from components.orchestration.kfp_airflow import versions_from_events

def event(extra, minute):
    return AssetEventDagRunReferenceResult(
        asset={"name": "omnistage-dataset-versions", "uri": "file:///omnistage/dataset-versions", "extra": {}},
        extra=extra, source_task_id="publish", source_dag_id="ingest_multimodal", source_run_id=f"r{minute}",
        source_map_index=-1, source_aliases=[], timestamp=datetime(2026, 12, 1, 3, minute, tzinfo=timezone.utc))

events = TriggeringAssetEventsAccessor.build([
    event({"dataset": "demo", "version": "new.dir", "git_commit": "b"}, 30),
    event({"dataset": "demo", "version": "old.dir", "git_commit": "a"}, 10),
    event({"dataset": "speech", "version": "s1.dir"}, 20),
])
result = {"versions": versions_from_events(events), "none": versions_from_events({})}
try:
    versions_from_events(TriggeringAssetEventsAccessor.build([event({"note": "no version"}, 5)]))
except ValueError as exc:
    result["error"] = str(exc)
print(json.dumps(result))
"""


def test_the_newest_event_per_dataset_gives_its_version(airflow_env):
    proc = run_airflow_python(SCRIPT, airflow_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["versions"] == {"demo": "new.dir", "speech": "s1.dir"}
    assert result["none"] == {}
    assert "ingest_multimodal/r5 carries no dataset version" in result["error"]
