"""The TrainJob launcher (trainjob_launcher.py, through stage_entry.launch_stage_step) against a stand-in
Kubernetes API server on 127.0.0.1 (k8s_standin.py), with the real `kubernetes` client and a kubeconfig.

It is not a cluster (none can run here): admission, Trainer's and JobSet's controllers, RBAC enforcement and
foreground deletion are not exercised; k8s_standin.py lists what is scripted.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from components.pipelines.stage_entry import POINTER, launch_stage_step
from components.pipelines.trainjob import SPEC_HASH_ANNOTATION, StageInputs, build_trainjob, stage_checkpoint_dir
from components.pipelines.trainjob_launcher import (
    API_CALLS,
    AdmissionTimeout,
    LaunchError,
    LaunchSettings,
    TrainJobConflict,
    TrainJobFailed,
    launch_trainjob,
)
from components.specs.curriculum import CurriculumSpec
from tests.components.pipelines.k8s_standin import JobScript, K8sStandin, _flag, rbac_attributes
from tests.conftest import REPO_ROOT

SHIPPED_PATH = REPO_ROOT / "data_specs" / "curriculum" / "longcat_omni.yaml"
# The shipped recipe without its object-storage settings (cluster.checkpoint_uri, dvc_remote): checkpoints stay
# on the volume unless a test's environment names a bucket. Set by the module fixture below.
FULL_PATH: Path
FULL: CurriculumSpec
STAGE = "stage1-text-speech"  # a later stage: its init_from comes through the previous stage's pointer
NAMESPACE = "team-a"
pytestmark = pytest.mark.timeout(60)  # a launcher that waits for the wrong job must not hang the suite
FAST = LaunchSettings(poll_initial_s=0.01, poll_max_s=0.05, log_drain_s=5)
DATASETS = json.dumps({name: f"/data/{name}" for name in ("text_corpus", "speech_text", "asr")})


@pytest.fixture(scope="module", autouse=True)
def _volume_only_recipe(tmp_path_factory):
    global FULL_PATH, FULL
    doc = yaml.safe_load(SHIPPED_PATH.read_text())
    storage = ("checkpoint_uri", "dvc_remote", "s3_endpoint")
    doc["cluster"] = {k: v for k, v in doc["cluster"].items() if k not in storage}
    FULL_PATH = tmp_path_factory.mktemp("recipe") / "longcat_omni_volume.yaml"
    FULL_PATH.write_text(yaml.safe_dump(doc))
    FULL = CurriculumSpec.load(FULL_PATH)


@pytest.fixture
def standin(tmp_path, monkeypatch):
    with K8sStandin() as api:
        monkeypatch.setenv("KUBECONFIG", str(api.write_kubeconfig(tmp_path / "kubeconfig", NAMESPACE)))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        for name in ("OMNISTAGE_CHECKPOINT_URI", "OMNISTAGE_DVC_REMOTE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            monkeypatch.delenv(name, raising=False)  # the launcher passes these on (set by the S3 fixtures)
        yield api
    for request in api.requests:  # every call the launcher made is one the shipped Role grants (launcher-rbac)
        assert rbac_attributes(request) in API_CALLS, request


def _launch(tmp_path, run="r1", tokenizer="/data/tok.json", attempt="a1", settings=FAST, datasets=DATASETS,
            previous_checkpoint=None, curriculum=None):  # fmt: skip
    previous = tmp_path / "previous"
    previous.mkdir(exist_ok=True)
    (previous / POINTER).write_text(previous_checkpoint or stage_checkpoint_dir(FULL, run, "stage0-text"))
    out = tmp_path / attempt / "checkpoint"
    result = launch_stage_step(str(curriculum or FULL_PATH), STAGE, run, datasets, tokenizer, "http://mlflow:5000", 0,
                               str(out), init_from=str(previous), settings=settings)  # fmt: skip
    return result, out


def _manifest(run="r1", tokenizer="/data/tok.json"):
    inputs = StageInputs(datasets=json.loads(DATASETS), tokenizer=tokenizer, tracking_uri="http://mlflow:5000",
                         init_from=stage_checkpoint_dir(FULL, run, "stage0-text"))  # fmt: skip
    return build_trainjob(FULL, FULL_PATH, STAGE, run, inputs)


def test_a_launch_creates_the_job_streams_rank0_and_points_the_artifact_at_the_checkpoint(standin, tmp_path, capsys):
    manifest = _manifest()
    standin.scripts[manifest["metadata"]["name"]] = JobScript(rank0_log=["step 1 loss 9.1", "step 2 loss 8.7"])
    result, out = _launch(tmp_path)

    (post,) = standin.calls("POST")
    assert post.path == f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NAMESPACE}/trainjobs"
    assert post.body == manifest  # the one builder: what `omnistage pipeline trainjob` prints is what is created
    command = post.body["spec"]["trainer"]["command"]
    assert command[command.index("--init-from") + 1] == stage_checkpoint_dir(FULL, "r1", "stage0-text")
    checkpoint = stage_checkpoint_dir(FULL, "r1", STAGE)
    assert (out / POINTER).read_text() == checkpoint == command[command.index("--out") + 1]
    assert result == {"stage": STAGE, "trainjob": manifest["metadata"]["name"], "namespace": NAMESPACE,
                      "reattached": False, "checkpoint": checkpoint}  # fmt: skip

    printed = capsys.readouterr().out.splitlines()
    rank0 = [line for line in printed if "-node-0-0-" in line]
    assert [line.split("] ", 1)[1] for line in rank0] == ["step 1 loss 9.1", "step 2 loss 8.7"]
    assert not [line for line in printed if "rank-1 line" in line]  # only the rank-0 node's log
    (followed,) = standin.calls("GET", "/log")
    assert _flag(followed.query, "follow") and followed.job_running  # streamed while the job ran


def test_on_object_storage_the_job_publishes_to_a_uri_keyed_by_run_and_stage_and_the_artifact_points_there(
        standin, tmp_path, monkeypatch):  # fmt: skip
    monkeypatch.setenv("OMNISTAGE_CHECKPOINT_URI", "s3://team-a/ckpt")
    monkeypatch.setenv("OMNISTAGE_DVC_REMOTE", "s3://team-a/dvc")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://minio.internal:9000")
    version = "0123456789abcdef0123456789abcdef.dir"
    datasets = json.dumps({name: f"{name}@{version}" for name in ("text_corpus", "speech_text", "asr")})
    previous_uri = f"s3://team-a/ckpt/{FULL.name}/r1/stage0-text/checkpoint"
    launch = dict(tokenizer="s3://team-a/tok/tokenizer.json", datasets=datasets, previous_checkpoint=previous_uri)
    standin.scripts[_manifest()["metadata"]["name"]] = JobScript(rank0_log=["step 1 loss 9.1"])  # same run + stage
    result, out = _launch(tmp_path, **launch)

    (post,) = standin.calls("POST")
    trainer = post.body["spec"]["trainer"]
    command, env = trainer["command"], {e["name"]: e["value"] for e in trainer["env"]}
    uri = f"s3://team-a/ckpt/{FULL.name}/r1/{STAGE}/checkpoint"
    assert command[command.index("--checkpoint-uri") + 1] == uri == (out / POINTER).read_text() == result["checkpoint"]
    assert command[command.index("--init-from") + 1] == previous_uri  # the previous stage's published URI
    assert f"asr=asr@{version}" in command and command[command.index("--tokenizer") + 1] == launch["tokenizer"]
    assert env["OMNISTAGE_DVC_REMOTE"] == "s3://team-a/dvc" and env["AWS_ENDPOINT_URL"] == "https://minio.internal:9000"
    retried, out_again = _launch(tmp_path, attempt="a2", **launch)  # a retry re-attaches and points at the same URI
    assert retried["reattached"] and (out_again / POINTER).read_text() == uri and len(standin.calls("POST")) == 1

    monkeypatch.setenv("OMNISTAGE_CHECKPOINT_URI", "/mnt/checkpoints")  # a volume is OMNISTAGE_CHECKPOINT_ROOT
    with pytest.raises(ValueError, match="OMNISTAGE_CHECKPOINT_URI='/mnt/checkpoints' is not an object-store URI"):
        _launch(tmp_path, attempt="a3", **launch)


def test_the_curriculums_object_storage_settings_win_over_the_launchers_environment(standin, tmp_path, monkeypatch):
    shipped = CurriculumSpec.load(SHIPPED_PATH).cluster  # names a checkpoint bucket and a DVC remote
    monkeypatch.setenv("OMNISTAGE_CHECKPOINT_URI", "s3://team-a/ckpt")
    monkeypatch.setenv("OMNISTAGE_DVC_REMOTE", "s3://team-a/dvc")
    standin.scripts[_manifest()["metadata"]["name"]] = JobScript()
    result, out = _launch(tmp_path, curriculum=SHIPPED_PATH)
    trainer = standin.calls("POST")[0].body["spec"]["trainer"]
    uri = f"{shipped.checkpoint_uri}/{FULL.name}/r1/{STAGE}/checkpoint"
    assert trainer["command"][trainer["command"].index("--checkpoint-uri") + 1] == uri == (out / POINTER).read_text()
    assert {"name": "OMNISTAGE_DVC_REMOTE", "value": shipped.dvc_remote} in trainer["env"]


def _queued(tmp_path, admission_timeout_s: float) -> Path:
    doc = yaml.safe_load(FULL_PATH.read_text())
    doc["cluster"].update(queue="omnistage-gpu-h100", admission_timeout_s=admission_timeout_s)
    path = tmp_path / "queued.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_job_kueue_never_admits_is_deleted_after_the_admission_limit(standin, tmp_path):
    name = _manifest()["metadata"]["name"]
    standin.scripts[name] = JobScript(admit_at_get=None)  # the queue never has room
    started = time.monotonic()
    with pytest.raises(AdmissionTimeout, match=f"{name} was not admitted by Kueue queue 'omnistage-gpu-h100' within "
                       r"0.3 s \(suspended for \d+ s\); the job was deleted.*cluster.admission_timeout_s"):  # fmt: skip
        _launch(tmp_path, curriculum=_queued(tmp_path, 0.3))
    assert 0.3 < time.monotonic() - started < 10
    (post,) = standin.calls("POST")
    assert post.body["spec"]["suspend"] is True
    (delete,) = standin.calls("DELETE")
    assert delete.body["propagationPolicy"] == "Foreground" and (NAMESPACE, name) not in standin.jobs
    assert not (tmp_path / "a1" / "checkpoint" / POINTER).exists()


def test_the_admission_limit_counts_only_the_suspended_wait(standin, tmp_path):
    standin.scripts[_manifest()["metadata"]["name"]] = JobScript(admit_at_get=2, end_at_get=40)  # runs > 1 s
    started = time.monotonic()
    result, out = _launch(tmp_path, curriculum=_queued(tmp_path, 0.3))
    assert time.monotonic() - started > 0.3 and not result["reattached"] and (out / POINTER).is_file()
    assert not standin.calls("DELETE")


def test_a_retried_launch_reattaches_without_a_second_create(standin, tmp_path):
    name = _manifest()["metadata"]["name"]
    standin.scripts[name] = JobScript(end_at_get=6)
    standin.fail_gets = 3  # the API server goes away after the create: the first attempt gives up
    impatient = LaunchSettings(poll_initial_s=0.01, poll_max_s=0.05, max_api_errors=2)
    with pytest.raises(LaunchError, match="3 reads in a row failed.*a retry of this task re-attaches"):
        _launch(tmp_path, attempt="a1", settings=impatient)
    assert len(standin.calls("POST")) == 1 and (NAMESPACE, name) in standin.jobs

    retried, out = _launch(tmp_path, attempt="a2")  # KFP's retry of the task: same run, same stage
    assert retried["reattached"] and len(standin.calls("POST")) == 1
    again, out_again = _launch(tmp_path, attempt="a3")  # and once more after the job completed
    assert again == retried and (out / POINTER).read_text() == (out_again / POINTER).read_text()
    assert len(standin.calls("POST")) == 1 and not standin.calls("DELETE")


def test_another_spec_under_the_same_name_is_refused_and_left_alone(standin, tmp_path):
    theirs = _manifest(tokenizer="/data/other-tok.json")
    standin.put_job(NAMESPACE, theirs)
    # Were a launcher to re-attach to a job that is not its own, this script ends the wait at once.
    wrong = JobScript(end_at_get=1, end_after_log_followed=False, final={"type": "Failed", "status": "True",
                      "reason": "ReattachedToAnotherSpec", "message": ""})  # fmt: skip
    standin.scripts[theirs["metadata"]["name"]] = wrong
    with pytest.raises(TrainJobConflict, match=f"{NAMESPACE}/{theirs['metadata']['name']} already exists with "
                       "another spec.*kubectl delete trainjob"):  # fmt: skip
        _launch(tmp_path)
    foreign = _manifest(run="r2")
    del foreign["metadata"]["annotations"][SPEC_HASH_ANNOTATION]  # not made by omnistage
    standin.put_job(NAMESPACE, foreign)
    standin.scripts[foreign["metadata"]["name"]] = wrong
    with pytest.raises(TrainJobConflict, match="spec hash absent"):
        _launch(tmp_path, run="r2")
    assert not standin.calls("POST") and not standin.calls("DELETE") and not (tmp_path / "a1" / "checkpoint").exists()


def test_a_failed_job_fails_the_task_with_its_reason(standin, tmp_path):
    name = _manifest()["metadata"]["name"]
    standin.scripts[name] = JobScript(final={"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                                             "message": "activeDeadlineSeconds of 345600 exceeded"})  # fmt: skip
    with pytest.raises(TrainJobFailed, match=f"{name} failed: DeadlineExceeded: activeDeadlineSeconds of 345600"):
        _launch(tmp_path)
    assert not (tmp_path / "a1" / "checkpoint" / POINTER).exists()
    with pytest.raises(TrainJobFailed, match="it had failed before this launch; delete it to run the stage again"):
        _launch(tmp_path, attempt="a2")  # a retry re-attaches to the failed job and says how to rerun


def test_a_cluster_without_trainer_is_named(tmp_path, monkeypatch):
    with K8sStandin(serve_trainer=False) as api:
        monkeypatch.setenv("KUBECONFIG", str(api.write_kubeconfig(tmp_path / "kubeconfig", "x")))
        with pytest.raises(LaunchError, match="serves no trainjobs.trainer.kubeflow.org/v1alpha1; install Kubeflow"):
            launch_trainjob(_manifest(), FAST)


CANCEL_PROBE = """
import sys, yaml
from components.pipelines.trainjob_launcher import LaunchSettings, launch_trainjob
launch_trainjob(yaml.safe_load(open(sys.argv[1])), LaunchSettings(poll_initial_s=0.05, poll_max_s=0.05))
"""


def test_sigterm_deletes_the_job_in_the_foreground_and_ends_the_task(standin, tmp_path):
    manifest = _manifest()
    name = manifest["metadata"]["name"]
    standin.scripts[name] = JobScript(end_at_get=10**9)  # runs until cancelled
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(manifest))
    proc = subprocess.Popen([sys.executable, "-c", CANCEL_PROBE, str(tmp_path / "job.yaml")], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not standin.rank0_followed.is_set():  # created, running, its log followed
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    (delete,) = standin.calls("DELETE")
    assert delete.path.endswith(f"/namespaces/{NAMESPACE}/trainjobs/{name}")
    assert delete.body["propagationPolicy"] == "Foreground"
    assert (NAMESPACE, name) not in standin.jobs and "deleted (foreground" in stderr
