"""infra/k8s/serving checked against the code it runs: the container's `omnistage serve` flags exist, its
probes hit a route the server defines, ports agree, the model is a registry reference."""

import re

import typer
import yaml

from components.cli import app
from components.tracking.models import parse_models_uri
from tests.conftest import REPO_ROOT

SERVING = REPO_ROOT / "infra" / "k8s" / "serving"


def _docs():
    return {d["kind"]: d for d in yaml.safe_load_all((SERVING / "omnistage-serve.yaml").read_text()) if d}


def test_the_pod_runs_serve_with_flags_the_cli_has_and_probes_its_health_route():
    from components.serving.server import create_app

    docs = _docs()
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    command = " ".join(container["args"])
    assert command.startswith("exec omnistage serve ")
    serve = typer.main.get_command(app).commands["serve"]
    options = {opt for param in serve.params for opt in param.opts}
    assert set(re.findall(r"--[a-z-]+", command)) <= options
    assert "--host 0.0.0.0" in command  # reachable through the Service, not only from inside the pod
    routes = {route.path for route in create_app(served=None).routes}  # routes only; nothing is loaded
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in routes and container[probe]["httpGet"]["port"] == 8765
    port = int(re.search(r"--port (\d+)", command).group(1))
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] == port == container["ports"][0]["containerPort"]
    assert docs["Service"]["spec"]["selector"] == docs["Deployment"]["spec"]["template"]["metadata"]["labels"]


def test_the_served_model_is_a_registry_alias_and_its_url_the_services():
    config = yaml.safe_load((SERVING / "kustomization.yaml").read_text())["configMapGenerator"][0]["literals"]
    settings = dict(item.split("=", 1) for item in config)
    name, version, alias = parse_models_uri(settings["OMNISTAGE_SERVE_MODEL"])
    assert alias == "champion" and version is None
    assert settings["OMNISTAGE_SERVE_URL"].startswith("http://omnistage-serve.")
