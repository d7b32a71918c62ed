# audit on a schedule: storage against the database against this node's caches (issue 14 item 2).
# The storage is the orchestrator's (TEMPLATE_STORAGE_URL, or STORAGE_PROVIDER + TEMPLATE_BUCKET_NAME, or Local
# with LOCAL_TEMPLATE_STORAGE_BASE_PATH), the caches this node's (ORCHESTRATOR_BASE_PATH, SHARED_CHUNK_CACHE_PATH).
#
#   nomad job run -var postgres_connection_string=postgresql://... deploy/nomad/e2b-artifact-audit.nomad.hcl
#   nomad job periodic force e2b-artifact-audit       # once, now
#
# Findings go to the allocation's stdout as JSON lines (nomad alloc logs). Never --fix from a schedule.
# See docs/fleet.md.

variable "postgres_connection_string" {
  type        = string
  description = "the API database (upstream's POSTGRES_CONNECTION_STRING)"
}

variable "cron" {
  type    = string
  default = "17 */6 * * *"
}

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

job "e2b-artifact-audit" {
  type      = "batch"
  node_pool = var.node_pool

  periodic {
    crons            = [var.cron]
    prohibit_overlap = true
    time_zone        = "UTC"
  }

  group "audit" {
    restart {
      attempts = 0
      mode     = "fail"
    }

    reschedule {
      attempts  = 0
      unlimited = false
    }

    task "audit" {
      driver = "raw_exec"

      env {
        POSTGRES_CONNECTION_STRING       = var.postgres_connection_string
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
        args    = ["audit", "--db", "${POSTGRES_CONNECTION_STRING}", "--json"]
      }

      resources {
        cpu    = 1000
        memory = 512
      }
    }
  }
}
