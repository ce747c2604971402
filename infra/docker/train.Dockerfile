# The training image: curriculum stages as KFP components on GPU node pools (OMNISTAGE_TRAIN_IMAGE).
# megatron-core with Transformer Engine (fused attention for context parallel, grouped GEMM for experts).
#   docker build -f infra/docker/train.Dockerfile -t ghcr.io/omnistage/omnistage-train:$(git rev-parse --short HEAD) .
#   docker push ...  # then use the digest it prints (name@sha256:...): cluster settings refuse latest
FROM nvcr.io/nvidia/pytorch:25.10-py3
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ffmpeg espeak-ng \
    && rm -rf /var/lib/apt/lists/*
ENV PYTHONUNBUFFERED=1 DVC_NO_ANALYTICS=1 GX_ANALYTICS_ENABLED=false PIP_NO_CACHE_DIR=1
WORKDIR /opt/omnistage
COPY pyproject.toml README.md ./
COPY components ./components
COPY model ./model
COPY data_specs ./data_specs
# The NGC image pins its CUDA torch and Transformer Engine through PIP_CONSTRAINT, so installing the
# project keeps them instead of pulling another torch. Editable, so the code finds data_specs/ beside
# components/ in the WORKDIR (see cpu.Dockerfile).
RUN pip install -e . av \
    && useradd --create-home --uid 1000 omnistage
USER 1000
# KFP runs the component command itself (install_kfp_package=False): no entrypoint.
