"""The contract between a compiled stage and the cluster it runs on (infra/README.md): node labels, the GPU
taint, the GPU resource name, the MLflow Secret and the Trainer runtime.

Both forms of a GPU stage use it, so they land on the same Terraform pools (infra/terraform/{gke,eks}):
a one-process stage is one KFP task pod (curriculum_pipeline.py), a stage of several processes a Kubeflow
Trainer TrainJob (trainjob.py).
"""

from __future__ import annotations

from components.specs.curriculum import ResourcesSpec, StageSpec

POOL_LABEL = "omnistage.io/pool"
DATA_POOL = "cpu-data"  # the CPU pool: ingestion, validation, DVC, orchestration (no taint)
# The GPU model as a label the Terraform sets on each GPU pool. GKE also labels its nodes
# cloud.google.com/gke-accelerator, but EKS has no such label (NVIDIA's feature discovery writes
# nvidia.com/gpu.product with another spelling): one project label keeps one selector for both clouds.
ACCELERATOR_LABEL = "omnistage.io/accelerator"
# The NVIDIA device plugin's extended resource. KFP's driver uses a task's accelerator *type* verbatim as
# the resource name, so this, not the GPU model, is what a task's accelerator type must be.
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = "nvidia.com/gpu"  # GPU pools are tainted nvidia.com/gpu=present:NoSchedule
MLFLOW_SECRET = "omnistage-mlflow"  # keys username, password
TRAINING_RUNTIME = "omnistage-megatron"  # the ClusterTrainingRuntime in infra/k8s/trainer/


def runs_as_trainjob(stage: StageSpec) -> bool:
    """A stage of more than one process (several nodes, several GPUs on one node, or processes_per_node > 1)
    is a TrainJob on a cluster (torchrun on every node) and torchrun on this machine under kfp.local; a
    one-process stage is a plain pod (KFP task)."""
    return stage.resources.world_size() > 1


def node_selector(resources: ResourcesSpec) -> dict[str, str]:
    selector = {POOL_LABEL: resources.node_pool}
    if resources.gpus_per_node:
        selector[ACCELERATOR_LABEL] = resources.accelerator
    return selector


def tolerations(resources: ResourcesSpec) -> list[dict[str, str]]:
    if not resources.gpus_per_node:
        return []  # CPU pods stay off the GPU pools: they do not tolerate the taint
    return [{"key": GPU_TAINT, "operator": "Exists", "effect": "NoSchedule"}]
