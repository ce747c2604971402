# GKE GPU node pools for omnistage. Labels and taints are what the compiled pipeline and the TrainJobs
# select and tolerate (components/pipelines/cluster.py): nodeSelector omnistage.io/pool=<node_pool of the
# stage> and, on GPU pools, omnistage.io/accelerator=<accelerator of the stage>; toleration
# nvidia.com/gpu:NoSchedule. GKE adds cloud.google.com/gke-accelerator itself; the project label is the one
# EKS can carry too.
# terraform init && terraform apply -var project=... -var cluster=...

terraform {
  required_version = ">= 1.6"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0"
    }
  }
}

variable "project" {
  type = string
}

variable "region" {
  type    = string
  default = "us-central1"
}

variable "cluster" {
  type        = string
  description = "Name of an existing GKE cluster"
}

variable "h100_nodes" {
  type        = number
  default     = 64
  description = "a3-highgpu-8g nodes (8 x H100 80GB each) for the full-size curriculum"
}

provider "google" {
  project = var.project
  region  = var.region
}

# CPU pool: ingestion, validation, DVC, evaluation bookkeeping, MLflow, Airflow.
resource "google_container_node_pool" "cpu_data" {
  name     = "cpu-data"
  cluster  = var.cluster
  location = var.region

  autoscaling {
    min_node_count = 1
    max_node_count = 16
  }

  node_config {
    machine_type = "n2-standard-16"
    disk_size_gb = 500
    labels = {
      "omnistage.io/pool" = "cpu-data"
    }
    oauth_scopes = ["https://www.googleapis.com/auth/cloud-platform"]
  }
}

# H100 pool: curriculum stages (node_pool: gpu-h100, accelerator nvidia-h100-80gb).
resource "google_container_node_pool" "gpu_h100" {
  name       = "gpu-h100"
  cluster    = var.cluster
  location   = var.region
  node_count = var.h100_nodes

  node_config {
    machine_type = "a3-highgpu-8g"
    disk_size_gb = 2000

    guest_accelerator {
      type  = "nvidia-h100-80gb"
      count = 8
      gpu_driver_installation_config {
        gpu_driver_version = "LATEST"
      }
    }

    labels = {
      "omnistage.io/pool"        = "gpu-h100"
      "omnistage.io/accelerator" = "nvidia-h100-80gb" # the guest_accelerator type above
    }

    taint {
      key    = "nvidia.com/gpu"
      value  = "present"
      effect = "NO_SCHEDULE"
    }

    oauth_scopes = ["https://www.googleapis.com/auth/cloud-platform"]
  }

  placement_policy {
    type = "COMPACT" # all-to-all expert parallelism wants the nodes close together
  }
}

output "pools" {
  value = {
    cpu_data = google_container_node_pool.cpu_data.name
    gpu_h100 = google_container_node_pool.gpu_h100.name
  }
}
