"""Images by digest (components/images.py): nothing shipped references `:latest` or an untagged project image,
the shipped defaults are digests, and an image configured for a cluster as `latest` is refused with the
variable's name and the fix."""

import re
import subprocess
import sys

import pytest
import yaml

from components.images import (
    CPU_IMAGE_VAR,
    DIGEST,
    TRAIN_IMAGE_VAR,
    ImageError,
    cluster_image,
    image_problem,
)
from components.orchestration.rayjob import DEFAULT_IMAGE as RAYJOB_IMAGE
from tests.conftest import REPO_ROOT

SHIPPED = sorted(
    p
    for folder in ("infra", "components", "dags", "data_specs")
    for p in (REPO_ROOT / folder).rglob("*")
    if p.is_file() and p.suffix in {".py", ".yaml", ".yml", ".tf", ".Dockerfile", ".sh", ".md"}
)
LATEST = re.compile(r"[\w.\-/]+:latest\b")


def _images(node):
    """Every value of an `image` key, and every OMNISTAGE_*IMAGE env value, in a YAML document."""
    if isinstance(node, dict):
        if isinstance(node.get("image"), str):
            yield node["image"]
        if str(node.get("name", "")).endswith("IMAGE") and isinstance(node.get("value"), str):
            yield node["value"]
        for value in node.values():
            yield from _images(value)
    elif isinstance(node, list):
        for value in node:
            yield from _images(value)


def test_no_shipped_file_references_latest():
    offenders = [f"{p.relative_to(REPO_ROOT)}: {m.group(0)}" for p in SHIPPED for m in LATEST.finditer(p.read_text())]
    assert SHIPPED and not offenders, offenders


def test_every_image_in_the_shipped_manifests_and_values_is_pinned():
    images = []
    for path in sorted((REPO_ROOT / "infra").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            images += [(path.name, image) for image in _images(doc)]
    assert {name for name, _ in images} >= {"omnistage-megatron.yaml", "mlflow.yaml", "airflow-values.yaml"}
    assert [(name, image) for name, image in images if image_problem(image)] == []
    project = [image for _, image in images if "omnistage/" in image]
    assert project and all(DIGEST.match(image) for image in project)  # the project's own images by digest


def test_the_code_defaults_are_digests_and_a_latest_override_is_refused_naming_the_variable(monkeypatch):
    for var in (CPU_IMAGE_VAR, TRAIN_IMAGE_VAR):
        monkeypatch.delenv(var, raising=False)
    assert DIGEST.match(cluster_image(CPU_IMAGE_VAR, RAYJOB_IMAGE))
    monkeypatch.setenv(CPU_IMAGE_VAR, "registry.example/omnistage-cpu:2026.12.1")
    assert cluster_image(CPU_IMAGE_VAR, RAYJOB_IMAGE) == "registry.example/omnistage-cpu:2026.12.1"
    for bad in ("registry.example/omnistage-cpu:latest", "registry.example:5000/omnistage-cpu"):
        monkeypatch.setenv(CPU_IMAGE_VAR, bad)
        with pytest.raises(ImageError, match=rf"^{CPU_IMAGE_VAR}='{re.escape(bad)}' .*by digest"):
            cluster_image(CPU_IMAGE_VAR, RAYJOB_IMAGE)


def test_compiling_stage_components_with_a_latest_training_image_fails_with_the_fix():
    probe = "import components.pipelines.stage_components as s; print(s.TRAIN_IMAGE, s.CPU_IMAGE)"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}
    ok = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT, env=env,
                        timeout=120)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert all(DIGEST.match(image) for image in ok.stdout.split())
    bad = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
                         env={**env, TRAIN_IMAGE_VAR: "ghcr.io/omnistage/omnistage-train:latest"})  # fmt: skip
    assert bad.returncode != 0 and f"ImageError: {TRAIN_IMAGE_VAR}=" in bad.stderr and "by digest" in bad.stderr
