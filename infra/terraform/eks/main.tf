# EKS GPU node groups for omnistage, with the same labels and taints as the GKE pools:
#   omnistage.io/pool=<node_pool>; on GPU nodes omnistage.io/accelerator=<GPU model> and
#   nvidia.com/gpu=present:NoSchedule.
# terraform init && terraform apply -var cluster=... -var node_role_arn=... -var 'subnet_ids=[...]'

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

resource "aws_eks_node_group" "gpu_h100" {
  cluster_name    = var.cluster
  node_group_name = "gpu-h100"
  node_role_arn   = var.node_role_arn
  subnet_ids      = var.subnet_ids
  instance_types  = ["p5.48xlarge"] # 8 x H100 80GB
  ami_type        = "AL2023_x86_64_NVIDIA"
  disk_size       = 2000

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
