"""The project's container images as cluster pods reference them: by digest, or by an explicit tag, never `latest`.

A pod that pulls a moved tag runs other code than its peers (a TrainJob node replaced mid-stage, a Ray worker,
a retried DAG step), and nothing records which build ran. Every image omnistage configures for a cluster goes
through `cluster_image`, which reads the environment variable that overrides the shipped default and refuses
`latest` or an untagged name with the variable and the fix. The defaults are digest placeholders, like the
runtime in infra/k8s/trainer/: replace them with the digest the push of the Dockerfile reports (README,
"Running on a cluster", images).

Standard library only: the Airflow runner seam imports this when a DAG file parses.
"""

from __future__ import annotations

import os
import re

PLACEHOLDER_DIGEST = "sha256:" + "0" * 64
CPU_IMAGE_VAR = "OMNISTAGE_IMAGE"  # infra/docker/cpu.Dockerfile: data steps, launchers, Ray, MLflow
TRAIN_IMAGE_VAR = "OMNISTAGE_TRAIN_IMAGE"  # infra/docker/train.Dockerfile: GPU stage tasks and TrainJob nodes
DEFAULT_CPU_IMAGE = f"ghcr.io/omnistage/omnistage-cpu@{PLACEHOLDER_DIGEST}"
DEFAULT_TRAIN_IMAGE = f"ghcr.io/omnistage/omnistage-train@{PLACEHOLDER_DIGEST}"
DIGEST = re.compile(r"^[a-z0-9][a-z0-9._\-/:]*@sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[a-z0-9][a-z0-9._-]*:([\w][\w.-]{0,127})$")  # the last path segment: a registry port is not a tag


class ImageError(ValueError):
    """An image reference a cluster pod must not use; the message names where it came from and the fix."""


def image_problem(image: str) -> str | None:
    """Why `image` is not pinned (None when it is): a digest, or an explicit tag other than `latest`."""
    if DIGEST.match(image):
        return None
    tag = _TAG.match(image.rsplit("/", 1)[-1])
    if tag is None:
        return "has no tag or digest (which means latest)"
    if tag.group(1) == "latest":
        return "uses the tag latest"
    return None


def require_pinned(image: str, where: str) -> str:
    """`image` unchanged when pinned; else an ImageError naming `where` (a flag, a variable, a file)."""
    problem = image_problem(image)
    if problem:
        raise ImageError(f"{where}={image!r} {problem}: give the image by digest (name@sha256:<64 hex>, what "
                         "`docker push` prints) or an explicit tag other than latest, so every pod runs the same "
                         "build")  # fmt: skip
    return image


def cluster_image(env_var: str, default: str) -> str:
    """The image from `env_var` when set (refused unless pinned), else the shipped digest default."""
    return require_pinned(os.environ.get(env_var) or default, env_var)
