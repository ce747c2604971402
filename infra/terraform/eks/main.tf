# EKS GPU node groups for omnistage, with the same labels and taints as the GKE pools:
#   omnistage.io/pool=<node_pool>; on GPU nodes omnistage.io/accelerator=<GPU model> and
#   nvidia.com/gpu=present:NoSchedule.
# terraform init && terraform apply -var cluster=... -var node_role_arn=... -var 'subnet_ids=[...]' \
#   -var efa_security_group_id=sg-...

terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "cluster" {
  type = string
}

variable "node_role_arn" {
  type = string
}

variable "subnet_ids" {
  type = list(string)
}

variable "h100_nodes" {
  type    = number
  default = 64
}

# EFA (curriculum cluster.network: efa; components/pipelines/network.py requests this many
# vpc.amazonaws.com/efa per node): one EFA interface per network card of p5.48xlarge.
variable "efa_interfaces" {
  type    = number
  default = 32
}

variable "efa_security_group_id" {
  type        = string
  description = "Security group of the GPU nodes' interfaces: EFA needs all traffic allowed to and from the group itself, plus what the cluster needs"
}

provider "aws" {
  region = var.region
}

resource "aws_eks_node_group" "cpu_data" {
  cluster_name    = var.cluster
  node_group_name = "cpu-data"
  node_role_arn   = var.node_role_arn
  subnet_ids      = var.subnet_ids
  instance_types  = ["m6i.4xlarge"]
  disk_size       = 500

  scaling_config {
    min_size     = 1
    desired_size = 2
    max_size     = 16
  }

  labels = {
    "omnistage.io/pool" = "cpu-data"
  }
}

# All GPU nodes in one cluster placement group: EFA traffic stays within a spine (one AZ: give subnet_ids
# of one AZ).
resource "aws_placement_group" "gpu_h100" {
  name     = "omnistage-gpu-h100"
  strategy = "cluster"
}

# The GPU nodes' launch template: the root disk (a node group with a launch template takes none of its
# own) and the EFA interfaces. The NVIDIA AL2023 AMI holds the EFA driver; the EFA device plugin
# (infra/README.md) advertises the interfaces as vpc.amazonaws.com/efa.
resource "aws_launch_template" "gpu_h100" {
  name_prefix = "omnistage-gpu-h100-"

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size = 2000
      volume_type = "gp3"
    }
  }

  placement {
    group_name = aws_placement_group.gpu_h100.name
  }

  dynamic "network_interfaces" {
    for_each = range(var.efa_interfaces)
    content {
      network_card_index    = network_interfaces.value
      device_index          = network_interfaces.value == 0 ? 0 : 1
      interface_type        = "efa"
      security_groups       = [var.efa_security_group_id]
      delete_on_termination = true
    }
  }
}

resource "aws_eks_node_group" "gpu_h100" {
  cluster_name    = var.cluster
  node_group_name = "gpu-h100"
  node_role_arn   = var.node_role_arn
  subnet_ids      = var.subnet_ids
  instance_types  = ["p5.48xlarge"] # 8 x H100 80GB, 32 EFA network cards
  ami_type        = "AL2023_x86_64_NVIDIA"

  launch_template {
    id      = aws_launch_template.gpu_h100.id
    version = aws_launch_template.gpu_h100.latest_version
  }

  scaling_config {
    min_size     = 0
    desired_size = var.h100_nodes
    max_size     = var.h100_nodes
  }

  labels = {
    "omnistage.io/pool"        = "gpu-h100"
    "omnistage.io/accelerator" = "nvidia-h100-80gb" # p5.48xlarge: 8 x H100 80GB (EKS sets no GPU-model label)
  }

  taint {
    key    = "nvidia.com/gpu"
    value  = "present"
    effect = "NO_SCHEDULE"
  }
}
