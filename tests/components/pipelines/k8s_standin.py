"""A STAND-IN for the Kubernetes API server, for the TrainJob launcher's tests. It is not a cluster.

No kube-apiserver (nor etcd, Kubeflow Trainer, JobSet or Kueue) can run on the development machines, so this
threaded HTTP server on 127.0.0.1 answers exactly the REST calls trainjob_launcher makes, through the real
`kubernetes` client and a kubeconfig:

    POST   /apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs          201, or 409 AlreadyExists
    GET    /apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs/{name}   200, or 404 NotFound
    DELETE /apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs/{name}   200 (records the options)
    GET    /api/v1/namespaces/{ns}/pods?labelSelector=k=v,...                     PodList (equality selectors)
    GET    /api/v1/namespaces/{ns}/pods/{name}/log?container=node[&follow=true]   text; follow holds the
                                                                                  stream open until the pod ends

Errors are metav1 Status objects with the code and reason the real API server uses; a request without the
kubeconfig's bearer token gets 401; any other path 404. Objects live in memory. A JobScript plays Trainer
and JobSet for one job name: after some GETs of the job, the pods of nodes 0 and 1 appear (Running, with a
log each and the JobSet labels), and after more the job gets its final condition and the pods end. A job
created suspended (Kueue's queue label) is first admitted, or never, as its script says.

What this does NOT exercise: admission (Trainer's webhooks, defaulting, the CRD's OpenAPI validation, Kueue),
real controllers (the JobSet, Jobs and pods are scripted, restarts and gang scheduling absent), RBAC
enforcement (the Role is checked against the recorded calls, not enforced), foreground deletion's wait for
dependents (a DELETE removes the job and its pods at once), watches, resourceVersion conflicts, and the
condition reasons and messages of a real Trainer (the scripts' are illustrative).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import yaml

TRAINJOBS = re.compile(r"^/apis/trainer\.kubeflow\.org/v1alpha1/namespaces/([^/]+)/trainjobs(?:/([^/]+))?$")
PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")
POD_LOG = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")
TOKEN = "standin-token"
COMPLETE = {"type": "Complete", "status": "True", "reason": "JobsCompleted", "message": "all node jobs completed"}


@dataclass
class JobScript:
    """What happens to a created TrainJob, counted in GETs of it (the launcher's polls)."""

    pods_at_get: int = 1
    """The GET at which the pods of nodes 0 and 1 appear, Running."""
    end_at_get: int = 3
    """The GET from which the job ends with `final` (and its pods with it)."""
    final: dict = field(default_factory=lambda: dict(COMPLETE))
    end_after_log_followed: bool = True
    """Hold the end until the rank-0 log is being followed, so a test sees lines streamed while running."""
    rank0_log: list[str] = field(default_factory=lambda: ["step 1 loss 9.1", "step 2 loss 8.7"])
    admit_at_get: int | None = 1
    """For a job created suspended (a Kueue queue): the GET at which Kueue admits it (spec.suspend -> false);
    None: never. Nothing else happens to a suspended job."""


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: dict | None
    job_running: bool | None = None
    """For log requests: whether the pod's job was still running when the request came."""


def _flag(query: dict, name: str) -> bool:
    """A boolean query parameter as the API server parses it (Go's strconv.ParseBool: the Python client
    sends `True`)."""
    return query.get(name, ["false"])[0] in ("1", "t", "T", "true", "TRUE", "True")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    doc = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
           "reason": reason, "code": code}  # fmt: skip
    if details:
        doc["details"] = details
    return doc


class _Pod:
    def __init__(self, namespace: str, job: str, node: int, log: list[str]):
        self.name = f"{job}-node-0-{node}-{uuid.uuid4().hex[:5]}"
        self.namespace, self.job, self.log, self.phase = namespace, job, log, "Running"
        self.ended = threading.Event()
        self.labels = {
            "jobset.sigs.k8s.io/jobset-name": job,
            "jobset.sigs.k8s.io/replicatedjob-name": "node",
            "jobset.sigs.k8s.io/job-index": "0",
            "batch.kubernetes.io/job-completion-index": str(node),
        }
        self.created = _now()

    def as_dict(self) -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": self.labels,
                "creationTimestamp": self.created,
                "uid": str(uuid.uuid4()),
            },  # fmt: skip
            "spec": {"containers": [{"name": "node", "image": "standin"}]},
            "status": {"phase": self.phase},
        }


class K8sStandin:
    """The stand-in server; `with K8sStandin() as api:` starts it on a free port and stops it."""

    def __init__(self, serve_trainer: bool = True):
        self.serve_trainer = serve_trainer  # False: a cluster without the Trainer CRDs
        self.jobs: dict[tuple[str, str], dict] = {}
        self.pods: dict[tuple[str, str], _Pod] = {}
        self.scripts: dict[str, JobScript] = {}
        self.gets: dict[tuple[str, str], int] = {}
        self.fail_gets = 0  # the next N GETs of an existing job answer 503, as an API server that is restarting
        self.requests: list[Request] = []
        self.rank0_followed = threading.Event()
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    # -- the test's side --------------------------------------------------------------------------------------
    def __enter__(self) -> K8sStandin:
        standin = self

        class Handler(_Handler):
            api = standin

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for pod in list(self.pods.values()):
            pod.ended.set()
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def write_kubeconfig(self, path: Path, namespace: str) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "launcher", "user": {"token": TOKEN}}],
            "contexts": [
                {"name": "standin", "context": {"cluster": "standin", "user": "launcher", "namespace": namespace}}
            ],  # fmt: skip
            "current-context": "standin",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def calls(self, method: str, pattern: str = "") -> list[Request]:
        return [r for r in self.requests if r.method == method and pattern in r.path]

    def put_job(self, namespace: str, manifest: dict) -> None:
        """A job someone else created (kubectl, another tool), with no script."""
        with self.lock:
            self.jobs[(namespace, manifest["metadata"]["name"])] = self._stored(namespace, manifest)

    # -- the API's side ---------------------------------------------------------------------------------------
    @staticmethod
    def _stored(namespace: str, manifest: dict) -> dict:
        job = json.loads(json.dumps(manifest))
        job["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()), resourceVersion="1", generation=1,
                               creationTimestamp=_now())  # fmt: skip
        job["status"] = {}
        return job

    def create_job(self, namespace: str, body: dict) -> tuple[int, dict]:
        name = (body.get("metadata") or {}).get("name")
        if body.get("kind") != "TrainJob" or not name:
            return 422, _status(422, "Invalid", "TrainJob.trainer.kubeflow.org is invalid: metadata.name: Required")
        if body["metadata"].get("namespace", namespace) != namespace:
            return 400, _status(400, "BadRequest", "the namespace of the provided object does not match the "
                                "namespace sent on the request")  # fmt: skip
        with self.lock:
            if (namespace, name) in self.jobs:
                return 409, _status(409, "AlreadyExists", f'trainjobs.trainer.kubeflow.org "{name}" already exists',
                                    {"name": name, "group": "trainer.kubeflow.org", "kind": "trainjobs"})  # fmt: skip
            job = self.jobs[(namespace, name)] = self._stored(namespace, body)
            return 201, job

    def get_job(self, namespace: str, name: str) -> tuple[int, dict]:
        with self.lock:
            job = self.jobs.get((namespace, name))
            if job is None:
                return 404, _not_found(name)
            if self.fail_gets:
                self.fail_gets -= 1
                return 503, _status(503, "ServiceUnavailable", "the server is currently unable to handle the request")
            count = self.gets[(namespace, name)] = self.gets.get((namespace, name), 0) + 1
            script = self.scripts.get(name)
            if script:
                self._play(namespace, job, script, count)
            return 200, job

    def _play(self, namespace: str, job: dict, script: JobScript, count: int) -> None:
        name = job["metadata"]["name"]
        if job["spec"].get("suspend"):
            if script.admit_at_get is None or count < script.admit_at_get:
                return
            job["spec"]["suspend"] = False  # Kueue's admission
        if count >= script.pods_at_get and not self._job_pods(namespace, name):
            for node, lines in ((0, script.rank0_log), (1, [f"rank-1 line of {name}"])):
                pod = _Pod(namespace, name, node, lines)
                self.pods[(namespace, pod.name)] = pod
        ended = bool(job["status"].get("conditions"))
        may_end = self.rank0_followed.is_set() or not script.end_after_log_followed
        if count >= script.end_at_get and not ended and may_end:
            job["status"]["conditions"] = [dict(script.final, lastTransitionTime=_now())]
            for pod in self._job_pods(namespace, name):
                pod.phase = "Succeeded" if script.final["type"] == "Complete" else "Failed"
                pod.ended.set()

    def _job_pods(self, namespace: str, job: str) -> list[_Pod]:
        return [p for (ns, _), p in self.pods.items() if ns == namespace and p.job == job]

    def delete_job(self, namespace: str, name: str) -> tuple[int, dict]:
        with self.lock:
            job = self.jobs.pop((namespace, name), None)
            if job is None:
                return 404, _not_found(name)
            for pod in self._job_pods(namespace, name):  # at once: the stand-in has no garbage collector
                pod.ended.set()
                del self.pods[(namespace, pod.name)]
            job["metadata"]["deletionTimestamp"] = _now()
            return 200, job

    def list_pods(self, namespace: str, selector: str) -> tuple[int, dict]:
        wanted = {}
        for term in filter(None, selector.split(",")):
            match = re.fullmatch(r"([^=!\s]+)==?([^=!\s]*)", term.strip())
            if not match:
                return 400, _status(400, "BadRequest", f"the stand-in supports only equality selectors, got {term!r}")
            wanted[match[1]] = match[2]
        with self.lock:
            items = [p.as_dict() for (ns, _), p in self.pods.items()
                     if ns == namespace and all(p.labels.get(k) == v for k, v in wanted.items())]  # fmt: skip
        return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items}


def _not_found(name: str) -> dict:
    return _status(404, "NotFound", f'trainjobs.trainer.kubeflow.org "{name}" not found',
                   {"name": name, "group": "trainer.kubeflow.org", "kind": "trainjobs"})  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    api: K8sStandin
    protocol_version = "HTTP/1.0"  # one request per connection; a followed log ends when the connection closes

    def log_message(self, *args) -> None:  # keep pytest's output for the test's own lines
        pass

    def _send(self, code: int, doc: dict) -> None:
        data = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        request = Request(method, url.path, query, body)
        self.api.requests.append(request)
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._send(401, _status(401, "Unauthorized", "Unauthorized"))
        jobs, pods, pod_log = TRAINJOBS.match(url.path), PODS.match(url.path), POD_LOG.match(url.path)
        if jobs and self.api.serve_trainer:
            namespace, name = jobs.groups()
            if method == "POST" and not name:
                return self._send(*self.api.create_job(namespace, body or {}))
            if method == "GET" and name:
                return self._send(*self.api.get_job(namespace, name))
            if method == "DELETE" and name:
                return self._send(*self.api.delete_job(namespace, name))
            return self._send(405, _status(405, "MethodNotAllowed", f"the stand-in does not serve {method} here"))
        if pods and method == "GET":
            return self._send(*self.api.list_pods(pods[1], query.get("labelSelector", [""])[0]))
        if pod_log and method == "GET":
            return self._log(request, *pod_log.groups(), query)
        return self._send(404, _status(404, "NotFound", "the server could not find the requested resource"))

    def _log(self, request: Request, namespace: str, name: str, query: dict) -> None:
        pod = self.api.pods.get((namespace, name))
        if pod is None:
            return self._send(404, _status(404, "NotFound", f'pods "{name}" not found'))
        container = query.get("container", ["node"])[0]
        if container != "node":
            return self._send(400, _status(400, "BadRequest", f"container {container} is not valid for pod {name}"))
        request.job_running = not pod.ended.is_set()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        for line in pod.log:
            self.wfile.write(f"{line}\n".encode())
        self.wfile.flush()
        if _flag(query, "follow"):
            if pod.labels["batch.kubernetes.io/job-completion-index"] == "0":
                self.api.rank0_followed.set()
            while not pod.ended.wait(0.05) and not self.api.stopping.is_set():
                pass  # a followed log of a running container stays open

    def do_GET(self) -> None:  # noqa: N802 (BaseHTTPRequestHandler's names)
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")


def rbac_attributes(request: Request) -> tuple[str, str, str]:
    """(API group, resource, verb) of a request, as the API server's authorizer sees it."""
    if match := TRAINJOBS.match(request.path):
        group, resource, item = "trainer.kubeflow.org", "trainjobs", match[2]
    elif match := POD_LOG.match(request.path):
        group, resource, item = "", "pods/log", match[2]
    elif PODS.match(request.path):
        group, resource, item = "", "pods", None
    else:
        raise AssertionError(f"the launcher called {request.method} {request.path}, which the stand-in does not serve")
    watch = _flag(request.query, "watch")
    verbs = {"POST": "create", "DELETE": "delete", "GET": "get" if item else ("watch" if watch else "list")}
    return group, resource, verbs[request.method]
