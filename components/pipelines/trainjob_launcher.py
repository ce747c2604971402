"""Launch a multi-node stage's TrainJob and see it through: the body of the KFP launcher task
(stage_entry.launch_stage_step), which hands over the manifest trainjob.build_trainjob makes.

    result = launch_trainjob(manifest, LaunchSettings())   # blocks until the job is Complete; raises otherwise

What it does, in order:
- reads the TrainJob (trainer.kubeflow.org/v1alpha1) under its deterministic name (run + stage) and creates
  it when absent (a create that loses a race, 409 AlreadyExists, reads the winner);
- when a job holds the name, re-attaches if its `omnistage.io/spec-hash` annotation equals the manifest's
  (a retried task: no second create), and refuses with TrainJobConflict otherwise;
- polls the job with exponential backoff until a `Complete` or `Failed` condition is True, printing the
  rank-0 node pod's log meanwhile (and the next pod's when Trainer restarts the node group);
- `Failed` raises TrainJobFailed with the condition's reason and message;
- a job that stays suspended (not admitted by Kueue) longer than `admission_timeout_s` is deleted and
  AdmissionTimeout raised, naming the queue and the wait;
- SIGTERM (KFP cancelling the task deletes its pod) or KeyboardInterrupt deletes the job with
  propagationPolicy Foreground (its JobSet, Jobs and node pods go first) and re-raises.

SDK or CRD: the CRD through the official `kubernetes` client (CustomObjectsApi, CoreV1Api), not the `kubeflow`
SDK's TrainerClient, because TrainerClient.train() names each job itself (a random letter + 11 hex digits),
so a retried task could never find the job it created; its RuntimePatch option writes under the fixed manager
`trainer.kubeflow.org/kubeflow-sdk`, so the job would differ from the manifest `omnistage pipeline trainjob`
prints; wait_for_job_status() reports "TrainJob X is Failed" without the condition's reason; delete_job()
sets no propagation policy; and it reads the ClusterTrainingRuntime first (one more RBAC grant). The
`kubernetes` client is already pinned by kfp; the kubeflow SDK is not installed.

Polling rather than a watch: a watch must be resumed after every server-side timeout and 410 Gone, and a GET
every <= 30 s costs nothing next to a job that holds 64 nodes for days.

Credentials: the kubeconfig named by KUBECONFIG when set; otherwise the pod's service account when running
in a cluster (KUBERNETES_SERVICE_HOST); otherwise ~/.kube/config. The grants it needs are
infra/k8s/trainer/launcher-rbac.yaml (API_CALLS below lists them).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from components.pipelines.trainjob import API_VERSION, KUEUE_QUEUE_LABEL, NODE, SPEC_HASH_ANNOTATION

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "trainjobs"
# Labels JobSet puts on the pods of the JobSet Trainer creates under the TrainJob's name: node rank 0 is
# completion index 0 of job 0 of the "node" replicated job.
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
RANK0_LABELS = {
    "jobset.sigs.k8s.io/replicatedjob-name": NODE,
    "jobset.sigs.k8s.io/job-index": "0",
    "batch.kubernetes.io/job-completion-index": "0",
}
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# (API group, resource, verb) of every call below; the Role in infra/k8s/trainer/launcher-rbac.yaml grants them.
API_CALLS = (
    (GROUP, PLURAL, "create"),
    (GROUP, PLURAL, "get"),
    (GROUP, PLURAL, "delete"),
    ("", "pods", "list"),
    ("", "pods/log", "get"),
)
RBAC_FILE = "infra/k8s/trainer/launcher-rbac.yaml"
log = logging.getLogger(__name__)


class LaunchError(RuntimeError):
    """The launcher could not see the TrainJob through; the message says what happened and what to do."""


class TrainJobConflict(LaunchError):
    """A job with another spec holds the deterministic name."""


class TrainJobFailed(LaunchError):
    """The TrainJob's Failed condition is True; the message carries its reason and message."""


class AdmissionTimeout(LaunchError):
    """Kueue did not admit (unsuspend) the TrainJob within the admission limit; the job was deleted."""


class LaunchCancelled(SystemExit):
    """SIGTERM reached the launcher: exit 128 + signal, as a shell reports a process the signal ended."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)


@dataclass(frozen=True)
class LaunchSettings:
    """How the launcher talks to the cluster and waits."""

    namespace: str | None = None
    """Where the TrainJob goes. None: the pod's own namespace in a cluster, else the kubeconfig context's."""
    poll_initial_s: float = 2.0
    """First wait between GETs of the job; doubles up to poll_max_s."""
    poll_max_s: float = 30.0
    log_drain_s: float = 10.0
    """How long the finished launcher waits for the log follower to print the rest of the rank-0 log."""
    max_api_errors: int = 5
    """Consecutive failed GETs (5xx, 429, connection errors) tolerated while waiting, before giving up."""
    admission_timeout_s: float | None = None
    """How long the job may stay suspended (waiting for Kueue's admission), counted from when this launcher
    first sees it suspended, before it is deleted and the task fails (curriculum cluster.admission_timeout_s).
    None: no limit."""

    def __post_init__(self):
        if not 0 < self.poll_initial_s <= self.poll_max_s:
            raise ValueError(f"LaunchSettings: need 0 < poll_initial_s <= poll_max_s, got {self.poll_initial_s}, "
                             f"{self.poll_max_s}")  # fmt: skip
        if self.admission_timeout_s is not None and self.admission_timeout_s <= 0:
            raise ValueError(f"LaunchSettings: admission_timeout_s must be > 0, got {self.admission_timeout_s}")
        if self.log_drain_s < 0 or self.max_api_errors < 0:
            raise ValueError("LaunchSettings: log_drain_s and max_api_errors must not be negative")


@dataclass(frozen=True)
class LaunchResult:
    namespace: str
    name: str
    reattached: bool
    """True when the job existed (a retried task) and this launch only waited for it."""
    condition: dict
    """The job's Complete condition."""


def connect(settings: LaunchSettings):
    """An ApiClient and the namespace to use, from KUBECONFIG, the pod's service account, or ~/.kube/config."""
    from kubernetes import client, config

    configuration = client.Configuration()
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and not os.environ.get("KUBECONFIG")
    try:
        if in_cluster:
            config.load_incluster_config(client_configuration=configuration)
            namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        else:
            # Passed explicitly: the client reads KUBECONFIG once, when it is imported.
            kubeconfig = os.environ.get("KUBECONFIG") or None
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
            _, active = config.list_kube_config_contexts(config_file=kubeconfig)
            namespace = active["context"].get("namespace") or "default"
    except (config.ConfigException, OSError) as exc:
        kubeconfig = os.environ.get("KUBECONFIG", "~/.kube/config")
        where = "the pod's service account" if in_cluster else f"kubeconfig {kubeconfig}"
        raise LaunchError(f"no Kubernetes credentials from {where}: {exc}; set KUBECONFIG to a kubeconfig for the "
                          "cluster, or run the launcher in a pod") from None  # fmt: skip
    return client.ApiClient(configuration), settings.namespace or namespace


class TrainJobApi:
    """The REST calls the launcher makes (API_CALLS), on one namespace."""

    def __init__(self, api_client, namespace: str):
        from kubernetes import client

        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    def create(self, manifest: dict) -> dict:
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, manifest)

    def get(self, name: str) -> dict:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def delete(self, name: str) -> None:
        from kubernetes import client

        foreground = client.V1DeleteOptions(propagation_policy="Foreground")
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, body=foreground)

    def rank0_pods(self, name: str) -> list:
        selector = ",".join(f"{k}={v}" for k, v in {JOBSET_NAME_LABEL: name, **RANK0_LABELS}.items())
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        return sorted(pods, key=lambda p: p.metadata.creation_timestamp or 0)

    def follow_log(self, pod_name: str) -> Iterator[str]:
        response = self.core.read_namespaced_pod_log(pod_name, self.namespace, container=NODE, follow=True,
                                                     _preload_content=False)  # fmt: skip
        try:
            for raw in response:
                yield raw.decode(errors="replace").rstrip("\n")
        finally:
            response.release_conn()


def _true_conditions(job: dict) -> dict[str, dict]:
    return {c["type"]: c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}


class _LogFollower(threading.Thread):
    """Prints the rank-0 node pod's log as it is written; a pod Trainer recreates is followed next."""

    def __init__(self, api: TrainJobApi, name: str, sink: Callable[[str], None], interval_s: float):
        super().__init__(name=f"logs-{name}", daemon=True)  # a hung stream must not keep the task alive
        self.api, self.job, self.sink, self.interval_s = api, name, sink, interval_s
        self.stop = threading.Event()
        self.followed: set[str] = set()

    def run(self) -> None:
        while True:
            finishing = self.stop.is_set()  # one more pass after stop: the pod may have ended before we saw it
            self._follow_new_pods()
            if finishing:
                return
            self.stop.wait(self.interval_s)

    def _follow_new_pods(self) -> None:
        try:
            pods = self.api.rank0_pods(self.job)
        except Exception as exc:  # logs are a convenience: the job's conditions decide the task
            log.warning("listing the pods of TrainJob %s failed: %s", self.job, exc)
            return
        for pod in pods:
            if pod.metadata.name in self.followed or (pod.status and pod.status.phase == "Pending"):
                continue  # a Pending pod's container has no log yet
            self.followed.add(pod.metadata.name)
            try:
                for line in self.api.follow_log(pod.metadata.name):
                    self.sink(f"[{pod.metadata.name}] {line}")
            except Exception as exc:
                log.warning("the log stream of pod %s ended: %s", pod.metadata.name, exc)


@contextmanager
def _sigterm_cancels() -> Iterator[None]:
    """Turn SIGTERM into LaunchCancelled while the launcher runs (signals reach only the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def cancel(signum, _frame):
        raise LaunchCancelled(signum)

    previous = signal.signal(signal.SIGTERM, cancel)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def launch_trainjob(manifest: dict, settings: LaunchSettings | None = None) -> LaunchResult:
    """Create (or re-attach to) the TrainJob and return once it is Complete; see the module docstring.
    The rank-0 log goes to stdout, which is the KFP task's log."""
    settings = settings or LaunchSettings()
    api = TrainJobApi(*connect(settings))
    name = manifest["metadata"]["name"]
    where = f"TrainJob {api.namespace}/{name}"
    follower = _LogFollower(api, name, lambda line: print(line, flush=True), settings.poll_initial_s)
    with _sigterm_cancels():
        try:
            reattached = _create_or_reattach(api, manifest, where)
            follower.start()
            condition = _wait(api, name, where, settings, reattached)
        except (KeyboardInterrupt, LaunchCancelled):
            _delete(api, name, where, "the launcher was cancelled")
            raise
        except AdmissionTimeout:
            _delete(api, name, where, "Kueue did not admit it in time")
            raise
        finally:
            follower.stop.set()
            if follower.is_alive():
                follower.join(settings.log_drain_s)
    return LaunchResult(api.namespace, name, reattached, condition)


def _create_or_reattach(api: TrainJobApi, manifest: dict, where: str) -> bool:
    """Get first, so a retried task makes no second create; a create that loses a race (409) reads the winner."""
    from kubernetes.client.exceptions import ApiException

    name = manifest["metadata"]["name"]
    live = _get_or_none(api, name)
    if live is None:
        try:
            api.create(manifest)
            log.info("%s created", where)
            return False
        except ApiException as exc:
            if exc.status == 403:
                raise LaunchError(_forbidden(where, "create", exc)) from None
            if exc.status == 404:
                raise LaunchError(f"{where}: the cluster serves no {PLURAL}.{GROUP}/{VERSION}; install Kubeflow "
                                  "Trainer v2.3 (infra/README.md)") from None  # fmt: skip
            if exc.status != 409:
                raise LaunchError(f"{where}: creating it failed: HTTP {exc.status} {exc.reason}: {exc.body}") from None
        live = api.get(name)
    wanted = manifest["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    found = (live.get("metadata", {}).get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
    if found != wanted:
        raise TrainJobConflict(
            f"{where} already exists with another spec (spec hash {found or 'absent'}, this launch's {wanted}): "
            "the same run and stage were launched from a different curriculum or inputs, or the job is not "
            f"omnistage's. Delete it (kubectl delete trainjob -n {api.namespace} {name}) or launch under "
            "another run name"
        )
    log.info("%s already exists with this spec: re-attaching", where)
    return True


def _forbidden(where: str, verb: str, exc: BaseException) -> str:
    return (f"{where}: the launcher's service account may not {verb} TrainJobs ({getattr(exc, 'reason', exc)}); "
            f"bind it to the Role in {RBAC_FILE}")  # fmt: skip


def _get_or_none(api: TrainJobApi, name: str) -> dict | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return api.get(name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        if exc.status == 403:
            raise LaunchError(_forbidden(f"TrainJob {api.namespace}/{name}", "get", exc)) from None
        raise LaunchError(f"TrainJob {api.namespace}/{name}: reading it failed: HTTP {exc.status} "
                          f"{exc.reason}") from None  # fmt: skip


def _wait(api: TrainJobApi, name: str, where: str, settings: LaunchSettings, reattached: bool) -> dict:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    delay, errors, seen, last_error = settings.poll_initial_s, 0, set(), ""
    suspended_since: float | None = None  # monotonic time this launcher first saw the job suspended
    while True:
        try:
            job = api.get(name)
            errors = 0
        except ApiException as exc:
            if exc.status == 404:
                raise LaunchError(f"{where} was deleted while the launcher waited for it") from None
            if exc.status != 429 and exc.status < 500:
                raise LaunchError(f"{where}: reading it failed: HTTP {exc.status} {exc.reason}") from None
            job, errors = None, errors + 1
            last_error = f"HTTP {exc.status} {exc.reason}"
        except HTTPError as exc:
            job, errors, last_error = None, errors + 1, str(exc)
        if errors > settings.max_api_errors:
            raise LaunchError(f"{where}: {errors} reads in a row failed, the last with {last_error}; the job "
                              "may still be running (a retry of this task re-attaches to it)")  # fmt: skip
        conditions = _true_conditions(job) if job else {}
        for kind in conditions.keys() - seen:
            c = conditions[kind]
            log.info("%s: %s (%s) %s", where, kind, c.get("reason", ""), c.get("message", ""))
        seen |= conditions.keys()
        if "Failed" in conditions:
            c = conditions["Failed"]
            again = (f" (it had failed before this launch; delete it to run the stage again: kubectl delete "
                     f"trainjob -n {api.namespace} {name})") if reattached else ""  # fmt: skip
            raise TrainJobFailed(f"{where} failed: {c.get('reason', 'no reason')}: {c.get('message', '')}{again}")
        if "Complete" in conditions:
            return conditions["Complete"]
        if job is not None:
            suspended = bool((job.get("spec") or {}).get("suspend"))
            suspended_since = (suspended_since or time.monotonic()) if suspended else None
            _check_admission(job, where, settings, suspended_since)
        time.sleep(delay)
        delay = min(delay * 2, settings.poll_max_s)


def _check_admission(job: dict, where: str, settings: LaunchSettings, suspended_since: float | None) -> None:
    """AdmissionTimeout once the job has been suspended for longer than the admission limit. Kueue preempting
    an admitted job suspends it again: the clock restarts then, as it does for a retried launcher."""
    limit = settings.admission_timeout_s
    if limit is None or suspended_since is None:
        return
    waited = time.monotonic() - suspended_since
    if waited > limit:
        queue = ((job.get("metadata") or {}).get("labels") or {}).get(KUEUE_QUEUE_LABEL, "<no queue label>")
        raise AdmissionTimeout(
            f"{where} was not admitted by Kueue queue '{queue}' within {limit:g} s (suspended for {waited:.0f} s); "
            f"the job was deleted. Check the queue's quota and pending workloads (kubectl get localqueue {queue}; "
            "kubectl get clusterqueue) or raise cluster.admission_timeout_s in the curriculum"
        )


def _delete(api: TrainJobApi, name: str, where: str, why: str) -> None:
    """Delete the job in the foreground (its JobSet, Jobs and pods first); failures are logged with the fix."""
    from kubernetes.client.exceptions import ApiException

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the delete
    try:
        api.delete(name)
        log.warning("%s: %s deleted (foreground: its pods go first)", why, where)
    except ApiException as exc:
        if exc.status != 404:
            log.error("%s but deleting %s failed: HTTP %s %s; delete it by hand: kubectl delete trainjob -n %s %s",
                      why, where, exc.status, exc.reason, api.namespace, name)  # fmt: skip
