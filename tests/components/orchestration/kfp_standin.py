"""A stand-in for the Kubeflow Pipelines v2beta1 REST API, for tests: no KFP backend runs here (no
Kubernetes, Argo or MySQL), so this threaded HTTP server on 127.0.0.1 answers exactly the calls `kfp.Client`
2.17 makes for `omnistage pipeline submit/status/cancel`, with the paths and JSON shapes of kfp-server-api
2.17 (snake_case fields, as the KFP API server's gateway emits them):

    GET  /apis/v2beta1/healthz                        -> {"multi_user": false}
    GET  /apis/v2beta1/experiments?filter=...         (display_name EQUALS)
    POST /apis/v2beta1/experiments                    create
    POST /apis/v2beta1/runs                           create a run from a pipeline spec (recorded)
    GET  /apis/v2beta1/runs?experiment_id=&filter=&sort_by=&page_size=&page_token=
    GET  /apis/v2beta1/runs/{id}
    POST /apis/v2beta1/runs/{id}:terminate            -> CANCELING, CANCELED at the next read (recorded)

Anything else answers 404, and a filter or sort it does not implement answers 400, so a client change
shows up as a failure instead of a silently wrong answer. What it leaves unexercised: the real server's
validation of the pipeline spec, compiling it to an Argo workflow and running it, multi-user authorization
(a configured token is only compared), the real filter grammar beyond display_name EQUALS, and the timing
of state changes (here a run advances through `run_states`, one step per read of that run).

    with KfpStandin(run_states=["RUNNING", "SUCCEEDED"]) as kfp:
        ...  # kfp.url, kfp.submissions, kfp.terminations, kfp.set_state(run_id, "FAILED")
"""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

API = "/apis/v2beta1"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class KfpStandin:
    """The server, its recorded submissions and terminations, and the states its runs go through.

    run_states: the states a new run reports on successive reads (GET of the run; the last one sticks).
    lose_create_responses: the first N run creations are recorded and then answered 503, as when a gateway
        times out after the API server accepted the run (what makes a blind retry duplicate it).
    token: when set, every request must carry `Authorization: Bearer <token>` (else 401).
    """

    def __init__(self, run_states: list[str] | None = None, lose_create_responses: int = 0,
                 token: str | None = None) -> None:  # fmt: skip
        self.run_states = run_states or ["RUNNING"]
        self.lose_create_responses = lose_create_responses
        self.token = token
        self.submissions: list[dict] = []  # every POST /runs body, in order, also those answered 503
        self.terminations: list[str] = []  # run ids
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self._reads: dict[str, int] = {}
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> KfpStandin:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def set_state(self, run_id: str, state: str) -> None:
        with self._lock:
            self.runs[run_id]["state"] = state
            self._reads[run_id] = len(self.run_states)  # stop following the script

    # --- the API ---------------------------------------------------------------------------------
    def healthz(self) -> dict:
        return {"multi_user": False, "pipeline_store": "database"}

    def list_experiments(self, query: dict) -> dict:
        matches = [e for e in self.experiments.values() if _matches(e, query)]
        return {"experiments": matches, "total_size": len(matches)}

    def create_experiment(self, body: dict) -> dict:
        experiment = {"experiment_id": str(uuid.uuid4()), "display_name": body["display_name"],
                      "namespace": body.get("namespace") or "", "created_at": _now(),
                      "storage_state": "AVAILABLE"}  # fmt: skip
        self.experiments[experiment["experiment_id"]] = experiment
        return experiment

    def create_run(self, body: dict) -> dict:
        for needed in ("display_name", "experiment_id", "pipeline_spec"):
            if not body.get(needed):
                raise _Refused(400, f"run.{needed} is required")
        if body["experiment_id"] not in self.experiments:
            raise _Refused(404, f"experiment {body['experiment_id']} not found")
        self.submissions.append(body)
        run = {"run_id": str(uuid.uuid4()), "display_name": body["display_name"],
               "experiment_id": body["experiment_id"], "runtime_config": body.get("runtime_config") or {},
               "storage_state": "AVAILABLE", "created_at": _now(), "state": "PENDING",
               "_order": next(self._order)}  # fmt: skip
        self.runs[run["run_id"]] = run
        self._reads[run["run_id"]] = 0
        if self.lose_create_responses > 0:
            self.lose_create_responses -= 1
            raise _Refused(503, "upstream request timeout")
        return _public(run)

    def get_run(self, run_id: str) -> dict:
        run = self._run(run_id)
        if run["state"] == "CANCELING":
            run["state"] = "CANCELED"  # what KFP's persistence agent reports once the workflow stopped
        elif self._reads[run_id] < len(self.run_states):
            run["state"] = self.run_states[self._reads[run_id]]
            self._reads[run_id] += 1
        return _public(run)

    def list_runs(self, query: dict) -> dict:
        sort_by = query.get("sort_by", "")
        if sort_by not in ("", "created_at", "created_at desc"):
            raise _Refused(400, f"stand-in does not sort by {sort_by!r}")
        runs = [r for r in self.runs.values() if _matches(r, query)
                and (not query.get("experiment_id") or r["experiment_id"] == query["experiment_id"])]  # fmt: skip
        runs.sort(key=lambda r: r["_order"], reverse=sort_by.endswith("desc"))
        start = int(query.get("page_token") or 0)
        size = int(query.get("page_size") or 10)
        page = runs[start : start + size]
        token = str(start + size) if start + size < len(runs) else ""
        return {"runs": [_public(r) for r in page], "total_size": len(runs), "next_page_token": token}

    def terminate_run(self, run_id: str) -> dict:
        run = self._run(run_id)
        self.terminations.append(run_id)
        run["state"] = "CANCELING"
        self._reads[run_id] = len(self.run_states)
        return {}

    def _run(self, run_id: str) -> dict:
        if run_id not in self.runs:
            raise _Refused(404, f"run {run_id} not found")
        return self.runs[run_id]


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _public(run: dict) -> dict:
    return {k: v for k, v in run.items() if not k.startswith("_")}


def _matches(item: dict, query: dict) -> bool:
    """The one filter kfp.Client and omnistage send: display_name EQUALS a string (the enum by name or
    number, both of which the API's JSON accepts)."""
    if not query.get("filter"):
        return True
    for predicate in json.loads(query["filter"]).get("predicates", []):
        value = predicate.get("string_value", predicate.get("stringValue"))
        if predicate.get("key") not in ("display_name", "name") or predicate.get("operation") not in ("EQUALS", 1):
            raise _Refused(400, f"stand-in implements only display_name EQUALS, got {predicate}")
        if item["display_name"] != value:
            return False
    return True


def _handler(standin: KfpStandin):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output readable
            pass

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def _answer(self, method: str) -> None:
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}") if length else {}
            try:
                if standin.token and self.headers.get("Authorization") != f"Bearer {standin.token}":
                    raise _Refused(401, "missing or wrong bearer token")
                with standin._lock:
                    result = self._route(method, url.path, query, body)
                self._send(200, result)
            except _Refused as exc:
                self._send(exc.status, {"error": str(exc), "code": exc.status, "message": str(exc)})

        def _route(self, method: str, path: str, query: dict, body: dict) -> dict:
            if not path.startswith(API + "/"):
                raise _Refused(404, f"no such path {path}")
            parts = path[len(API) + 1 :].split("/")
            match method, parts:
                case "GET", ["healthz"]:
                    return standin.healthz()
                case "GET", ["experiments"]:
                    return standin.list_experiments(query)
                case "POST", ["experiments"]:
                    return standin.create_experiment(body)
                case "GET", ["runs"]:
                    return standin.list_runs(query)
                case "POST", ["runs"]:
                    return standin.create_run(body)
                case "GET", ["runs", run_id]:
                    return standin.get_run(run_id)
                case "POST", ["runs", action] if action.endswith(":terminate"):
                    return standin.terminate_run(action.removesuffix(":terminate"))
            raise _Refused(404, f"stand-in does not implement {method} {path}")

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
