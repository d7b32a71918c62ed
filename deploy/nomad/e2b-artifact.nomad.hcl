# e2b-artifact on demand: verify, push or pull the builds named at dispatch.
#
#   nomad job run -var node_pool=default -var template_bucket_name=my-templates deploy/nomad/e2b-artifact.nomad.hcl
#   nomad job dispatch -meta action=verify -meta builds="ID1 ID2" e2b-artifact
#   nomad job dispatch -meta action=sync-push -meta location=s3://other-cluster/templates e2b-artifact ids.txt
#   nomad job dispatch -meta action=sync-pull -meta location=gs://prod-templates -meta builds=ID e2b-artifact
#
# Build ids come from -meta builds (space or comma separated) and/or the dispatch payload (a file of ids,
# one a line). verify checks them where they lie (the template storage below, or -meta location);
# sync-push sends them from this node's LOCAL_TEMPLATE_STORAGE_BASE_PATH to -meta location, sync-pull
# fetches them from there into it, each with its parent chain. Output: nomad alloc logs <alloc>.
# See docs/fleet.md.

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

job "e2b-artifact" {
  type      = "batch"
  node_pool = var.node_pool

  parameterized {
    payload       = "optional"
    meta_required = ["action"]
    meta_optional = ["builds", "location"]
  }

  group "run" {
    restart {
      attempts = 0
      mode     = "fail"
    }

    reschedule {
      attempts  = 0
      unlimited = false
    }

    task "e2b-artifact" {
      driver = "raw_exec"

      dispatch_payload {
        file = "payload-builds.txt"
      }

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

      # Plain sh, no Go template actions; "$${" is HCL's escape for a literal "${".
      template {
        destination = "local/run.sh"
        perms       = "0755"
        data        = <<-EOT
          #!/bin/sh
          # The dispatched action over the build ids of -meta builds and of the payload.
          ids=local/builds.txt
          : > "$ids"
          for id in $(echo "$NOMAD_META_builds" | tr ',' ' '); do echo "$id" >> "$ids"; done
          if [ -s local/payload-builds.txt ]; then cat local/payload-builds.txt >> "$ids"; fi
          if ! grep -q '[^[:space:]]' "$ids"; then
            echo "error: no build ids: dispatch with -meta builds=ID or a payload file of ids" >&2
            exit 2
          fi
          case "$NOMAD_META_action" in
            verify)
              exec "$E2B_ARTIFACT" verify --all $${NOMAD_META_location:+"$NOMAD_META_location"} --builds "$ids"
              ;;
            sync-push|sync-pull)
              if [ -z "$NOMAD_META_location" ]; then
                echo "error: $NOMAD_META_action needs -meta location=s3://BUCKET/PREFIX (or gs://, a directory)" >&2
                exit 2
              fi
              rc=0
              for id in $(grep -v '^[[:space:]]*$' "$ids"); do
                if [ "$NOMAD_META_action" = sync-push ]; then
                  "$E2B_ARTIFACT" sync push --with-parents "$id" "$NOMAD_META_location" || rc=$?
                else
                  "$E2B_ARTIFACT" sync pull --with-parents "$id" "$NOMAD_META_location" || rc=$?
                fi
              done
              exit "$rc"
              ;;
            *)
              echo "error: unknown action '$NOMAD_META_action'" >&2
              echo "hint: -meta action=verify, sync-push or sync-pull" >&2
              exit 2
              ;;
          esac
        EOT
      }

      config {
        command = "/bin/sh"
        args    = ["local/run.sh"]
      }

      resources {
        cpu    = 2000
        memory = 1024
      }
    }
  }
}
