"""The launcher's RBAC (infra/k8s/trainer/launcher-rbac.yaml) grants every call the launcher makes
(trainjob_launcher.API_CALLS; the launcher tests check each request they record against that list) and binds
it to the service account KFP runs tasks with. Checked statically: no API server enforces it here."""

import yaml

from components.pipelines.trainjob_launcher import API_CALLS, RBAC_FILE
from tests.conftest import REPO_ROOT

RBAC_PATH = REPO_ROOT / RBAC_FILE


def _docs() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(RBAC_PATH.read_text())}


def _allows(role: dict, group: str, resource: str, verb: str) -> bool:
    return any(group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
               for rule in role["rules"])  # fmt: skip


def test_the_role_grants_every_call_the_launcher_makes_and_no_pod_writes():
    role = _docs()["Role"]
    for group, resource, verb in API_CALLS:
        assert _allows(role, group, resource, verb), (group, resource, verb)
    assert not any(_allows(role, "", "pods", verb) for verb in ("create", "update", "patch", "delete"))
    assert not any("*" in rule["verbs"] or "*" in rule["resources"] for rule in role["rules"])


def test_the_binding_gives_the_role_to_the_pipeline_service_account_in_its_namespace():
    docs = _docs()
    role, binding = docs["Role"], docs["RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}  # fmt: skip
    (subject,) = binding["subjects"]
    assert subject == {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": role["metadata"]["namespace"]}
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]
    kustomization = yaml.safe_load((RBAC_PATH.parent / "kustomization.yaml").read_text())
    assert RBAC_PATH.name in kustomization["resources"]
