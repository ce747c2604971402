"""Curriculum runs on a Kubeflow Pipelines cluster, idempotently: submit (or find the run already
submitted), read a run's state, cancel it.

    target = KfpTarget(host="https://kfp.example.com", namespace="team-ml", token=...)
    run = submit_or_find(target, curriculum, gate, arguments, training_key)   # a retry returns the same run
    run_state(target, run["run_id"]); cancel_run(target, run["run_id"])

The idempotency key is the training key (curriculum, gate, data versions, step budget): the run's display
name is `omnistage-retrain-<key>` inside one experiment per curriculum (`omnistage-<curriculum name>`).
Before submitting, the runs of that experiment with that name are listed; one that is pending, running,
paused or succeeded is returned instead of a second submission (an Airflow retry after a lost response or
a timed-out submit task). Failed, cancelled and skipped runs do not count: a retry after a cancel submits
a fresh run.

`omnistage pipeline submit/status/cancel` call these (the kfp SDK lives in the project venv, not in
Airflow's), and `retrain()` with a KFP host polls `run_state` until the run ends.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

TOKEN_ENV = "OMNISTAGE_KFP_TOKEN"  # the bearer token travels by environment, never on a command line
# States of V2beta1RuntimeState. A run in these is (or will be) the training for its key: never duplicate it.
# RUNTIME_STATE_UNSPECIFIED: a run the API accepted a moment ago, before its first state report. CANCELING
# is on its way out, so it does not count.
REUSABLE_STATES = frozenset({"RUNTIME_STATE_UNSPECIFIED", "PENDING", "RUNNING", "PAUSED", "SUCCEEDED"})
FINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"})


class KfpRunError(RuntimeError):
    pass


@dataclass(frozen=True)
class KfpTarget:
    """Where runs go: the KFP API endpoint, the (multi-user) namespace, and a bearer token if any."""

    host: str
    namespace: str | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        if not self.host.startswith(("http://", "https://")):
            raise ValueError(f"KFP host {self.host!r} needs its scheme: http://HOST[:PORT] or https://HOST")

    @classmethod
    def from_options(cls, host: str, namespace: str | None) -> KfpTarget:
        return cls(host=host.rstrip("/"), namespace=namespace or None, token=os.environ.get(TOKEN_ENV) or None)

    def client(self):
        import kfp

        _probe_healthz(self)
        # namespace=None keeps kfp's default ('kubeflow'), which then asks /healthz whether the deployment is
        # multi-user; a namespace given is used as is.
        kwargs = {"namespace": self.namespace} if self.namespace else {}
        return kfp.Client(host=self.host, existing_token=self.token, **kwargs)


def _probe_healthz(target: KfpTarget) -> None:
    """One GET of /healthz with the token: kfp.Client's own probe retries a refused token 5 times, 5 s apart,
    and then reports only a timeout."""
    import requests

    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    try:
        answer = requests.get(f"{target.host}/apis/v2beta1/healthz", headers=headers, timeout=30)
    except requests.RequestException as exc:
        raise KfpRunError(f"KFP API at {target.host} unreachable: {exc}; check the connection's host") from exc
    if answer.status_code in (401, 403):
        raise KfpRunError(f"KFP API at {target.host} answered {answer.status_code}: the token "
                          f"({TOKEN_ENV}, the connection's password) is missing or not accepted")  # fmt: skip


@contextlib.contextmanager
def api_errors(target: KfpTarget) -> Iterator[None]:
    """The API's refusals and an unreachable host as one error that names the host (not a traceback)."""
    import kfp_server_api
    import urllib3

    try:
        yield
    except kfp_server_api.ApiException as exc:
        raise KfpRunError(f"KFP API at {target.host} answered {exc.status} {exc.reason}: {exc.body!r:.300}") from exc
    except urllib3.exceptions.HTTPError as exc:
        raise KfpRunError(f"KFP API at {target.host} unreachable: {exc}; check the connection's host") from exc


def run_display_name(training_key: str) -> str:
    return f"omnistage-retrain-{training_key}"


def experiment_name(curriculum_name: str) -> str:
    return f"omnistage-{curriculum_name}"


def _state(run) -> str:
    return str(run.state or "RUNTIME_STATE_UNSPECIFIED")


def _summary(run, reused: bool) -> dict:
    return {"run_id": run.run_id, "display_name": run.display_name, "state": _state(run),
            "experiment_id": run.experiment_id, "reused": reused}  # fmt: skip


def find_run(client, experiment_id: str, display_name: str):
    """The newest run named `display_name` in the experiment that is live or succeeded, else None."""
    name_filter = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name",
                                              "string_value": display_name}]})  # fmt: skip
    page_token = ""
    while True:
        page = client.list_runs(experiment_id=experiment_id, filter=name_filter, sort_by="created_at desc",
                                page_size=50, page_token=page_token)  # fmt: skip
        for run in page.runs or []:
            # The name filter is the server's; the state check is ours, so a server that ignores the filter
            # cannot make us adopt another key's run.
            if run.display_name == display_name and _state(run) in REUSABLE_STATES:
                return run
        page_token = page.next_page_token or ""
        if not page_token:
            return None


def submit_or_find(target: KfpTarget, curriculum: Path, gate: Path | None, arguments: dict, training_key: str,
                   trained_elsewhere: Callable[[], dict | None] = lambda: None) -> dict:  # fmt: skip
    """The run for `training_key`: the one already submitted (live or succeeded) or a new submission of the
    compiled curriculum pipeline. Returns run id, state and whether it was reused.

    `trained_elsewhere` is asked only when no run carries the key (it costs an MLflow query): an outcome it
    returns is passed on with `run_id: None` instead of submitting."""
    from components.specs.curriculum import CurriculumSpec

    spec = CurriculumSpec.load(curriculum)
    with api_errors(target):
        return _submit_or_find(target.client(), spec.name, curriculum, gate, arguments, training_key,
                               trained_elsewhere)  # fmt: skip


def _submit_or_find(client, curriculum_name: str, curriculum: Path, gate: Path | None, arguments: dict,
                    training_key: str, trained_elsewhere: Callable[[], dict | None]) -> dict:  # fmt: skip
    from components.pipelines.curriculum_pipeline import compile_pipeline

    experiment = client.create_experiment(experiment_name(curriculum_name))  # get or create
    name = run_display_name(training_key)
    existing = find_run(client, experiment.experiment_id, name)
    if existing is not None:
        log.info("KFP run %s (%s) already carries training key %s: not submitting again",
                 existing.run_id, _state(existing), training_key)  # fmt: skip
        return _summary(existing, reused=True)
    if (outcome := trained_elsewhere()) is not None:
        return {**outcome, "run_id": None, "reused": False}
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(curriculum, Path(tmp) / "pipeline.yaml", gate)
        result = client.create_run_from_pipeline_package(str(package), arguments=arguments, run_name=name,
                                                         experiment_id=experiment.experiment_id)  # fmt: skip
    run = client.get_run(result.run_id)
    log.info("submitted KFP run %s for training key %s", run.run_id, training_key)
    return _summary(run, reused=False)


def run_state(target: KfpTarget, run_id: str) -> dict:
    """The run's state, whether it is final, and the error the API reports for a failed run."""
    with api_errors(target):
        run = target.client().get_run(run_id)
    state = _state(run)
    error = getattr(run.error, "message", None) if run.error else None
    return {"run_id": run.run_id, "display_name": run.display_name, "state": state,
            "final": state in FINAL_STATES, "error": error}  # fmt: skip


def cancel_run(target: KfpTarget, run_id: str) -> dict:
    """Terminate a live run (KFP moves it to CANCELING, then CANCELED); a finished run is left as it is."""
    with api_errors(target):
        client = target.client()
        state = _state(client.get_run(run_id))
        if state in FINAL_STATES:
            return {"run_id": run_id, "state": state, "cancelled": False}
        client.terminate_run(run_id)
        return {"run_id": run_id, "state": _state(client.get_run(run_id)), "cancelled": True}
