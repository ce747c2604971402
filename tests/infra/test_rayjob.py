"""The ingestion RayJob (components/orchestration/rayjob.py): the shipped example in infra/k8s/ray/ is exactly
what the code renders, the manifest validates against KubeRay's RayJob CRD schema and its pods against
Kubernetes 1.30, a broken one fails both checks, and what the pods could not use is refused."""

import copy
import tomllib

import kubernetes_validate
import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from components.cli import app
from components.orchestration.rayjob import RAY_VERSION, RayJobConfig, RayJobError, build_rayjob, manifest_yaml
from components.specs.dataset import DatasetSpec
from tests.conftest import REPO_ROOT
from tests.infra.rayjob_schema import rayjob_pods, rayjob_schema_errors, validate_rayjob_pods

DEMO_SPEC = REPO_ROOT / "data_specs" / "datasets" / "demo_s3.yaml"
DEMO_OUT = "s3://omnistage-datasets/demo"
SHIPPED = REPO_ROOT / "infra" / "k8s" / "ray" / "ingest-demo.yaml"


def _demo(config: RayJobConfig | None = None) -> dict:
    return build_rayjob(DatasetSpec.load(DEMO_SPEC), DEMO_SPEC, DEMO_OUT, config)


def test_the_shipped_example_is_what_the_code_renders_for_the_demo_spec():
    lines = SHIPPED.read_text().splitlines(keepends=True)
    body = "".join(line for line in lines if not line.startswith("#"))
    assert body == manifest_yaml(_demo())


@pytest.mark.parametrize(
    "config",
    [
        RayJobConfig(),
        RayJobConfig(
            num_workers=5,
            image="registry.example/omnistage-cpu:2026.12.1",
            s3_secret=None,
            s3_endpoint_url="http://minio.storage.svc:9000",
        ),
    ],  # fmt: skip
    ids=["defaults", "tag-endpoint-no-secret"],
)
def test_the_rayjob_validates_against_the_kuberay_crd_and_its_pods_against_kubernetes(config):
    manifest = yaml.safe_load(manifest_yaml(_demo(config)))  # as kubectl reads it
    assert rayjob_schema_errors(manifest) == []
    validate_rayjob_pods(manifest)
    spec = manifest["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["rayClusterSpec"]["rayVersion"] == RAY_VERSION
    assert spec["rayClusterSpec"]["authOptions"] == {"mode": "token"}  # KubeRay shares a token with every pod
    assert f"--workers {config.num_workers * config.worker.cpus} --json" in spec["entrypoint"]
    assert spec["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == config.num_workers
    for pod in rayjob_pods(manifest).values():
        env = {e["name"]: e for e in pod["containers"][0].get("env", [])}
        assert ("AWS_ACCESS_KEY_ID" in env) == bool(config.s3_secret)
        assert env.get("AWS_ENDPOINT_URL", {}).get("value") == config.s3_endpoint_url


@pytest.mark.parametrize(
    "breakage",
    [
        lambda m: m["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(replicas="2"),
        lambda m: m["spec"].update(shutdownAfterJobFinish=m["spec"].pop("shutdownAfterJobFinishes")),
        lambda m: m["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
    ],
    ids=["wrong-type", "misspelt-field", "non-string-start-param"],
)
def test_the_crd_check_rejects_a_broken_rayjob(breakage):
    manifest = copy.deepcopy(_demo())
    breakage(manifest)
    assert rayjob_schema_errors(manifest)


def test_the_kubernetes_check_rejects_a_broken_pod():
    manifest = copy.deepcopy(_demo())
    manifest["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"][0][
        "containerPort"
    ] = "gcs"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_rayjob_pods(manifest)


def test_ray_version_is_the_projects_pin():
    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"ray=={RAY_VERSION}" in [d.split("#")[0].replace(" ", "") for d in dependencies]


def test_the_name_is_a_short_dns_label_that_depends_on_the_output():
    spec = DatasetSpec.load(DEMO_SPEC).model_copy(update={"name": "a_very_long_dataset_name_" * 3})
    names = {build_rayjob(spec, DEMO_SPEC, f"s3://b/{i}")["metadata"]["name"] for i in range(2)}
    assert len(names) == 2 and all(len(n) <= 47 and n[0].isalpha() and "_" not in n for n in names)


def test_the_cli_refuses_a_local_out_naming_the_flag_and_the_fix():
    result = CliRunner().invoke(app, ["dataset", "rayjob", "--spec", str(DEMO_SPEC), "--out", "work/datasets/demo"])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "--out 'work/datasets/demo' is not in object storage" in message and "s3://bucket/prefix" in message


def test_local_sources_a_spec_outside_data_specs_and_a_moving_image_are_refused(tmp_path):
    local = REPO_ROOT / "data_specs" / "datasets" / "demo.yaml"
    with pytest.raises(RayJobError, match=r"sources\[0\].path of source 'video_qa' is 'work/raw/demo/video_qa'"):
        build_rayjob(DatasetSpec.load(local), local, DEMO_OUT)
    outside = tmp_path / "demo_s3.yaml"
    outside.write_text(DEMO_SPEC.read_text())
    with pytest.raises(RayJobError, match="--spec .* holds only this repository's data_specs/"):
        build_rayjob(DatasetSpec.load(outside), outside, DEMO_OUT)
    for image in ("ghcr.io/omnistage/omnistage-cpu:latest", "ghcr.io/omnistage/omnistage-cpu"):
        with pytest.raises(RayJobError, match="--image .* by digest"):
            RayJobConfig(image=image)


def test_the_entrypoint_uses_only_options_omnistage_ingest_has():
    ingest = typer.main.get_command(app).commands["ingest"]
    options = {opt for param in ingest.params for opt in param.opts}
    if "--executor" not in options:
        pytest.skip("`omnistage ingest` has no --executor yet (the Ray executor branch is not merged)")
    words = _demo()["spec"]["entrypoint"].split()
    assert words[:2] == ["omnistage", "ingest"]
    assert {w for w in words if w.startswith("--")} <= options
