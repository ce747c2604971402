# The CPU image: data-plane and orchestration steps (ingest, validate, DVC, evaluate, promote) run as
# `omnistage ...` in KubernetesPodOperator pods (OMNISTAGE_IMAGE); it also runs the MLflow server
# (PostgreSQL driver and boto3 for the S3 artifact store included). Build from the repository root:
#   docker build -f infra/docker/cpu.Dockerfile -t ghcr.io/omnistage/omnistage-cpu:$(git rev-parse --short HEAD) .
#   docker push ...  # then use the digest it prints (name@sha256:...): cluster settings refuse latest
FROM python:3.11-slim-bookworm
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ffmpeg espeak-ng git \
    && rm -rf /var/lib/apt/lists/*
ENV PYTHONUNBUFFERED=1 DVC_NO_ANALYTICS=1 GX_ANALYTICS_ENABLED=false PIP_NO_CACHE_DIR=1
WORKDIR /opt/omnistage
COPY pyproject.toml README.md ./
COPY components ./components
COPY model ./model
COPY data_specs ./data_specs
# CPU torch from PyTorch's CPU index: the default wheel would pull several GB of CUDA libraries.
# ray[default] adds the dashboard, whose job API a KubeRay RayJob submits through (infra/k8s/ray/).
# Editable install: the code finds data_specs/ (expectation suites, eval suites) beside components/ in the
# WORKDIR; a plain `pip install .` would put components/ in site-packages, away from data_specs/.
# The WORKDIR belongs to the user: the DAG's version step runs DVC in it (`dataset commit --repo .`).
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
    && pip install -e . av psycopg2-binary boto3 "ray[default]==2.60.0" \
    && useradd --create-home --uid 1000 omnistage \
    && chown -R omnistage /opt/omnistage
USER 1000
ENTRYPOINT ["omnistage"]
