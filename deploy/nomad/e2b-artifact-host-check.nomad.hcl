# host check on every client node of the pool: one allocation per node, once (sysbatch: the system
# scheduler's batch form; a "system" job would restart the check forever).
#
#   nomad job run -var node_pool=default deploy/nomad/e2b-artifact-host-check.nomad.hcl
#   nomad job status e2b-artifact-host-check          # a failed allocation = a node that fails a check
#   nomad alloc logs <alloc>                          # that node's findings, as JSON
#
# Run it again (nomad job run, or nomad job periodic force when periodic is set below) after changing
# nodes. It runs as root under raw_exec, like the orchestrator, so it sees what the orchestrator sees.
# See docs/fleet.md and docs/host.md.

variable "node_pool" {
  type        = string
  default     = "default"
  description = "Nomad node pool to run in (upstream's orchestrator job takes it the same way)"
}

variable "e2b_artifact" {
  type    = string
  default = "/usr/local/bin/e2b-artifact"
}

# The template storage, in the orchestrator's own variables (packages/orchestrator/pkg/cfg/storage.go).
variable "storage_provider" {
  type    = string
  default = "GCPBucket"
}

variable "template_bucket_name" {
  type    = string
  default = ""
}

variable "template_storage_url" {
  type    = string
  default = ""
}

variable "local_template_storage_base_path" {
  type    = string
  default = "/tmp/templates"
}

variable "aws_region" {
  type    = string
  default = ""
}

variable "aws_endpoint_url_s3" {
  type        = string
  default     = ""
  description = "S3-compatible endpoint (MinIO, Ceph RGW); empty for AWS"
}

variable "host_kernels_dir" {
  type    = string
  default = "/fc-kernels"
}

variable "firecracker_versions_dir" {
  type    = string
  default = "/fc-versions"
}

variable "orchestrator_base_path" {
  type    = string
  default = "/orchestrator"
}

variable "shared_chunk_cache_path" {
  type    = string
  default = ""
}

job "e2b-artifact-host-check" {
  type      = "sysbatch"
  node_pool = var.node_pool

  group "check" {
    restart {
      attempts = 0
      mode     = "fail"
    }

    reschedule {
      attempts  = 0
      unlimited = false
    }

    task "host-check" {
      driver = "raw_exec"

      env {
        NODE_ID                          = "${node.unique.name}"
        E2B_ARTIFACT                     = var.e2b_artifact
        STORAGE_PROVIDER                 = var.storage_provider
        TEMPLATE_BUCKET_NAME             = var.template_bucket_name
        TEMPLATE_STORAGE_URL             = var.template_storage_url
        LOCAL_TEMPLATE_STORAGE_BASE_PATH = var.local_template_storage_base_path
        AWS_REGION                       = var.aws_region
        AWS_ENDPOINT_URL_S3              = var.aws_endpoint_url_s3
        HOST_KERNELS_DIR                 = var.host_kernels_dir
        FIRECRACKER_VERSIONS_DIR         = var.firecracker_versions_dir
        ORCHESTRATOR_BASE_PATH           = var.orchestrator_base_path
        SHARED_CHUNK_CACHE_PATH          = var.shared_chunk_cache_path
      }

      config {
        command = var.e2b_artifact
        args    = ["host", "check", "--json"]
      }

      resources {
        cpu    = 500
        memory = 256
      }
    }
  }
}
