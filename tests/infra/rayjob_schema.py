"""Test helpers for KubeRay RayJob manifests: validation against the CRD's published schema (test data in
tests/infra/kuberay/), the way the API server and `kubectl apply` (strict field validation) would see it,
and the pods a RayJob's head and workers get, for the Kubernetes schemas.

The API server prunes fields a structural schema does not declare; kubectl's default strict validation
rejects them instead. Plain JSON Schema allows them, so `strict_schema` closes every object that declares
properties (unless it preserves unknown fields): a misspelt `shutdownAfterJobFinish` then fails here too.
Not checked: the CRD's CEL rules (x-kubernetes-validations) and KubeRay's admission checks (name length,
suspend rules), which components/orchestration/rayjob.py keeps by construction.
"""

from __future__ import annotations

import functools
import gzip
import json

import jsonschema

from tests.conftest import REPO_ROOT
from tests.infra.trainer_manifests import validate_pod

SCHEMA_FILE = REPO_ROOT / "tests" / "infra" / "kuberay" / "rayjob-v1-openapi-schema.json.gz"


def strict_schema(node):
    if isinstance(node, dict):
        node = {key: strict_schema(value) for key, value in node.items()}
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [strict_schema(item) for item in node]
    return node


@functools.cache
def _validator() -> jsonschema.Draft7Validator:
    schema = strict_schema(json.loads(gzip.decompress(SCHEMA_FILE.read_bytes())))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def rayjob_schema_errors(manifest: dict) -> list[str]:
    """Every violation of the RayJob CRD schema, as 'path: message' (empty when valid)."""
    errors = sorted(_validator().iter_errors(manifest), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def rayjob_pods(manifest: dict) -> dict[str, dict]:
    """The pod spec of the head and of each worker group, by group name."""
    cluster = manifest["spec"]["rayClusterSpec"]
    pods = {"head": cluster["headGroupSpec"]["template"]["spec"]}
    pods.update({group["groupName"]: group["template"]["spec"] for group in cluster["workerGroupSpecs"]})
    return pods


def validate_rayjob_pods(manifest: dict) -> None:
    for group, pod in rayjob_pods(manifest).items():
        validate_pod(pod, f"{manifest['metadata']['name']}-{group}")
