"""`omnistage dataset rayjob`: print the KubeRay RayJob that ingests a dataset on a Ray cluster.

Registered on the `dataset` group of components/cli/data.py; the manifest comes from
components/orchestration/rayjob.py (the same code that rendered infra/k8s/ray/).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from components.cli.common import fail, load_dataset_spec
from components.cli.data import dataset_app


@dataset_app.command("rayjob")
def dataset_rayjob(
    spec: Annotated[Path, typer.Option(help="Dataset spec under data_specs/, sources in a bucket.")],
    out: Annotated[str, typer.Option(help="Where the shards go: s3://bucket/prefix or gs://bucket/prefix.")],
    workers: Annotated[int, typer.Option(help="Ray worker pods.")] = 2,
    image: Annotated[str | None, typer.Option(help="CPU image by digest (name@sha256:...) or explicit tag.")] = None,
    namespace: Annotated[str, typer.Option(help="Namespace of the RayJob.")] = "omnistage",
    s3_endpoint_url: Annotated[
        str | None, typer.Option(help="AWS_ENDPOINT_URL for an S3-compatible store that is not AWS (MinIO, Ceph).")
    ] = None,
) -> None:
    """Print, as YAML, the RayJob that runs `omnistage ingest --executor ray` on its own Ray cluster
    (apply it with `kubectl apply -f -`; needs the KubeRay operator)."""
    from components.orchestration.rayjob import RayJobConfig, build_rayjob, manifest_yaml

    dataset = load_dataset_spec(spec, None)
    overrides = {"image": image} if image else {}
    try:
        config = RayJobConfig(num_workers=workers, namespace=namespace, s3_endpoint_url=s3_endpoint_url, **overrides)
        manifest = build_rayjob(dataset, spec, out, config)
    except ValueError as exc:  # RayJobError, and a bad --out
        fail(str(exc))
    print(manifest_yaml(manifest), end="")
