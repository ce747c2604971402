"""Inter-node network profiles for multi-node stages: what a TrainJob's nodes need for NCCL to use the
cluster's fast fabric instead of the pods' one TCP interface.

The curriculum selects one with `cluster.network` (components/specs/curriculum.py); trainjob.py adds its
extended resources to `resourcesPerNode` and its environment to `trainer.env`, so every node's container
gets them (Trainer applies both to the "node" container). One-node stages have no inter-node traffic and
take none of it.

- `none`: NCCL over the pod network (TCP sockets). Correct everywhere, slow for 64-node expert parallelism.
- `efa`: AWS Elastic Fabric Adapter on p5.48xlarge (infra/terraform/eks: 32 EFA interfaces per node, which
  the EFA device plugin advertises as `vpc.amazonaws.com/efa`). NCCL reaches EFA through libfabric and the
  aws-ofi-nccl plugin, which the training image must hold (NGC PyTorch images ship it; README, "Running on a
  cluster"). Hugepages are what AWS's EKS EFA examples request: libfabric registers its bounce buffers in them.

GKE's fabrics (A3 High GPUDirect-TCPX, A3 Mega GPUDirect-TCPXO, A3 Ultra/A4 RDMA) need more than resources
and environment: extra VPC networks attached per pod (annotations naming GKE Network objects), a privileged
sidecar (TCPX/TCPXO's receive daemon) or the NCCL RDMA plugin from host paths. They are documented in
infra/README.md, not rendered here: a TrainJob's runtimePatches cannot add a container with its own image,
and the objects they refer to exist only on such a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

NetworkName = Literal["none", "efa"]
EFA_RESOURCE = "vpc.amazonaws.com/efa"
EFA_INTERFACES_P5 = 32  # p5.48xlarge: 32 network cards, one EFA each (infra/terraform/eks var.efa_interfaces)


@dataclass(frozen=True)
class NetworkProfile:
    name: str
    resources: dict[str, str] = field(default_factory=dict)
    """Extended resources per node, requested and limited (hugepages must be both)."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment of every node's container."""


PROFILES: dict[str, NetworkProfile] = {
    "none": NetworkProfile("none"),
    "efa": NetworkProfile(
        "efa",
        resources={EFA_RESOURCE: str(EFA_INTERFACES_P5), "hugepages-2Mi": "5120Mi"},
        env={
            "FI_PROVIDER": "efa",  # libfabric: EFA only, never a silent fall-back to its TCP provider
            "FI_EFA_USE_DEVICE_RDMA": "1",  # GPUDirect RDMA: p5's EFA reads and writes GPU memory
            "FI_EFA_FORK_SAFE": "1",  # DataLoader workers fork after libfabric registered memory
            "NCCL_SOCKET_IFNAME": "^lo,docker",  # NCCL's bootstrap on the pod's interface, not loopback
            "NCCL_DEBUG": "WARN",  # INFO prints the transport chosen ("NET/OFI Selected Provider is efa")
        },
    ),
}


def network_profile(name: str) -> NetworkProfile:
    return PROFILES[name]
