# verify --all across the cluster: count = shards allocations, each verifying its share of the builds
# (a stable split by a hash of the build id), then one allocation that merges their results.
#
#   nomad job run -var run=$(date -u +%Y%m%dT%H%M%SZ) -var results=gs://my-bucket/e2b-artifact-verify \
#       -var template_bucket_name=my-templates -var shards=8 deploy/nomad/e2b-artifact-verify-all.nomad.hcl
#
# Shard I writes <results>/<run>/shard-I-of-N.jsonl (one JSON line per build, then a summary) when it is
# done; the merge allocation waits for all N and prints the fleet summary (nomad alloc logs). Each run
# needs its own -var run=..., which is also what makes Nomad start a new run of an unchanged job.
# A shard exits 1 when one of its builds fails verification; failed allocations are not retried.
# See docs/fleet.md.

variable "run" {
  type        = string
  description = "names this run; its results land under <results>/<run>/"
}

variable "results" {
  type        = string
  description = "where shard results go: s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, or a directory every node shares"
}

variable "shards" {
  type    = number
  default = 4
}

variable "jobs" {
  type        = number
  default     = 2
  description = "builds each allocation verifies at once"
}

variable "merge_wait_seconds" {
  type    = number
  default = 21600
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

job "e2b-artifact-verify-all" {
  type      = "batch"
  node_pool = var.node_pool

  group "shard" {
    count = var.shards

    restart {
      attempts = 0
      mode     = "fail"
    }

    reschedule {
      attempts  = 0
      unlimited = false
    }

    task "verify" {
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
        args = ["verify", "--all", "--shard", "${NOMAD_ALLOC_INDEX}/${var.shards}", "--jobs", "${var.jobs}",
          "--results", "${var.results}/${var.run}"]
      }

      resources {
        cpu    = 2000
        memory = 1024
      }
    }
  }

  group "merge" {
    restart {
      attempts = 0
      mode     = "fail"
    }

    reschedule {
      attempts  = 0
      unlimited = false
    }

    task "merge" {
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
        args    = ["verify", "--merge", "${var.results}/${var.run}", "--wait", "${var.merge_wait_seconds}"]
      }

      resources {
        cpu    = 200
        memory = 256
      }
    }
  }
}
