"""The ingest DAG's steps on a cluster, built in the Airflow venv as the worker builds them: with
`OMNISTAGE_RUNNER=kubernetes` the pod each step gets (object-store `out` required, S3 credentials from the
Secret, the endpoint, the data pool), and the Ray executor options resolved when the task runs from the
`ray_address` param or the `omnistage_ray` connection (AIRFLOW_CONN_OMNISTAGE_RAY)."""

import json

import kubernetes_validate
import pytest

from tests.dags.conftest import run_airflow_python
from tests.infra.trainer_manifests import K8S_VERSION

BUCKET_OUT = "s3://omnistage-datasets/demo"
PARAMS = {"spec": "data_specs/datasets/demo_s3.yaml", "out": BUCKET_OUT, "repo": ".", "workers": 2, "ray_address": "",
          "dvc_remote": "s3://omnistage-dvc/store"}  # fmt: skip

# For each case (task id, param overrides): the pod the operator builds, or the error its run-time check raises.
BUILD_PODS = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
from kubernetes.client import ApiClient
dag = DagBag(dag_folder="dags").dags["ingest_multimodal"]
results = []
for task_id, overrides in json.loads(sys.argv[1]):
    task = dag.get_task(task_id)
    template = list(task.arguments)
    context = {"params": {**json.loads(sys.argv[2]), **overrides}}
    task.render_template_fields(context)
    try:
        task.prepare_command(context)
        results.append({"pod": ApiClient().sanitize_for_serialization(task.build_pod_request_obj(None))})
    except ValueError as exc:
        results.append({"error": str(exc)})
    task.arguments = template
print(json.dumps(results))
"""


def _pods(env: dict, cases: list) -> list[dict]:
    proc = run_airflow_python(BUILD_PODS, env, args=[json.dumps(cases), json.dumps(PARAMS)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: omnistage}}]
current-context: x
"""


@pytest.fixture()
def kubernetes_env(airflow_env, tmp_path) -> dict:
    # The operator's hook loads a client configuration to label the pod; nothing connects to this server.
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    return dict(airflow_env, OMNISTAGE_RUNNER="kubernetes", OMNISTAGE_IMAGE="registry.example/omnistage-cpu:1",
                OMNISTAGE_S3_ENDPOINT_URL="http://minio.storage.svc:9000",
                KUBECONFIG=str(tmp_path / "kubeconfig"))  # fmt: skip


def test_pods_read_and_write_the_bucket_with_the_secrets_credentials_and_the_clusters_address(kubernetes_env):
    env = dict(kubernetes_env, AIRFLOW_CONN_OMNISTAGE_RAY="ray://ray-head.omnistage.svc:10001",
               OMNISTAGE_RAY_AUTH_SECRET="ingest-ray-token")  # fmt: skip
    cases = [["write_shards", {}], ["write_shards", {"ray_address": "ray://other-head:10001"}],
             ["probe_and_validate", {}], ["version", {}]]  # fmt: skip
    shard, shard_by_param, probe, version = _pods(env, cases)
    for result in (shard, shard_by_param, probe, version):
        pod = result["pod"]
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
        assert pod["spec"]["nodeSelector"] == {"omnistage.io/pool": "cpu-data"}
        (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "base"]  # beside it: the XCom sidecar
        env_vars = {e["name"]: e for e in container["env"]}
        assert env_vars["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "omnistage-s3",
                                                                               "key": "access_key_id"}  # fmt: skip
        assert env_vars["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "secret_access_key"
        assert env_vars["AWS_ENDPOINT_URL"]["value"] == "http://minio.storage.svc:9000"
        assert env_vars["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "ingest-ray-token",
                                                                            "key": "auth_token"}  # fmt: skip
        assert container["image"] == "registry.example/omnistage-cpu:1"
        assert "@omnistage-ray-executor@" not in container["args"][0]
    command = shard["pod"]["spec"]["containers"][0]["args"][0]
    assert (f"omnistage ingest --spec 'data_specs/datasets/demo_s3.yaml' --out '{BUCKET_OUT}' --json --phase shard "
            "--workers '2' --executor ray --ray-address ray://ray-head.omnistage.svc:10001 >") in command  # fmt: skip
    # The param wins over the connection.
    assert "--ray-address ray://other-head:10001 >" in shard_by_param["pod"]["spec"]["containers"][0]["args"][0]
    assert (
        "--phase probe --executor ray --ray-address ray://ray-head.omnistage.svc:10001 >"
        in (probe["pod"]["spec"]["containers"][0]["args"][0])
    )
    version_command = version["pod"]["spec"]["containers"][0]["args"][0]
    assert f"dataset commit --spec 'data_specs/datasets/demo_s3.yaml' --out '{BUCKET_OUT}' --repo . --remote " \
           "'s3://omnistage-dvc/store' >" in version_command  # fmt: skip
    assert "--executor" not in version_command  # DVC runs in the pod itself


def test_without_a_cluster_the_steps_run_locally_and_a_local_out_is_refused_at_run_time(kubernetes_env):
    no_cluster, local_out = _pods(kubernetes_env, [["write_shards", {}], ["write_shards", {"out": "work/d"}]])
    command = no_cluster["pod"]["spec"]["containers"][0]["args"][0]
    assert "RAY_AUTH_TOKEN" not in {e["name"] for e in no_cluster["pod"]["spec"]["containers"][0]["env"]}
    assert "--phase shard --workers '2'  >" in command and "--executor" not in command
    assert local_out["error"] == (
        "params.out 'work/d' is not in object storage, but with OMNISTAGE_RUNNER=kubernetes every step runs in its "
        "own pod and pods share no volume (the probe step's plan would never reach the shard step): set params.out "
        "to s3://bucket/prefix or gs://bucket/prefix"
    )


RESOLVE = """
import json, sys
from components.orchestration.ray_cluster import ray_executor_args
results = []
for params in json.loads(sys.argv[1]):
    try:
        results.append(ray_executor_args(params))
    except ValueError as exc:
        results.append(str(exc))
print(json.dumps(results))
"""


@pytest.mark.parametrize(
    "connection, expected",
    [
        (None, [[], ["--executor", "ray", "--ray-address", "10.0.0.5:6379"]]),
        (
            "ray://ray-head.omnistage.svc:10001",
            [
                ["--executor", "ray", "--ray-address", "ray://ray-head.omnistage.svc:10001"],
                ["--executor", "ray", "--ray-address", "10.0.0.5:6379"],
            ],
        ),  # fmt: skip
        (
            '{"conn_type": "generic", "host": "127.0.0.1", "port": 6380}',
            [
                ["--executor", "ray", "--ray-address", "127.0.0.1:6380"],
                ["--executor", "ray", "--ray-address", "10.0.0.5:6379"],
            ],
        ),  # fmt: skip
    ],
    ids=["no-connection", "ray-client-connection", "gcs-connection-json"],
)
def test_the_ray_address_comes_from_the_param_else_the_connection(airflow_env, connection, expected):
    env = dict(airflow_env, **({"AIRFLOW_CONN_OMNISTAGE_RAY": connection} if connection else {}))
    cases = [{"out": BUCKET_OUT, "ray_address": ""}, {"out": BUCKET_OUT, "ray_address": " 10.0.0.5:6379 "}]
    proc = run_airflow_python(RESOLVE, env, args=[json.dumps(cases)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == expected


def test_a_remote_ray_cluster_refuses_a_local_out_and_a_local_head_accepts_it(airflow_env):
    cases = [
        {"out": "work/d", "ray_address": "ray://ray-head:10001"},
        {"out": "work/d", "ray_address": "127.0.0.1:6379"},
    ]
    proc = run_airflow_python(RESOLVE, airflow_env, args=[json.dumps(cases)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    remote, local = json.loads(proc.stdout.strip().splitlines()[-1])
    assert remote.startswith(
        "params.out 'work/d' is not in object storage, but the Ray cluster at ray://ray-head:10001"
    )
    assert local == ["--executor", "ray", "--ray-address", "127.0.0.1:6379"]
