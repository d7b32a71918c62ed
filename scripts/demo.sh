#!/usr/bin/env bash
# The main job on the bundled sample: install what is needed, build a template from
# fixtures/sample-rootfs.tar with the envd stand-in, verify it, and print where it is.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${E2B_ARTIFACT_VENV:-$repo/.venv}
bash "$repo/scripts/setup.sh"
tool="$venv/bin/e2b-artifact"
storage=${LOCAL_TEMPLATE_STORAGE_BASE_PATH:-$repo/.demo/templates}
build_id=$("$tool" --storage "$storage" build \
  --rootfs-tar "$repo/fixtures/sample-rootfs.tar" \
  --envd "$repo/fixtures/envd-standin/envd" --envd-version 0.0.0-standin \
  --template-id sample --disk-size-mb 64)
build_dir="$storage/$build_id"
echo "== built $build_id"
if "$tool" --help | grep -q '^  verify '; then
  "$tool" --storage "$storage" verify "$build_id"
else
  "$tool" inject "$build_dir/rootfs.ext4" --envd "$repo/fixtures/envd-standin/envd"
  e2fsck -fn "$build_dir/rootfs.ext4"
  debugfs -R "stat /sbin/init" "$build_dir/rootfs.ext4" 2>/dev/null | grep -E "Type|Fast link"
fi
echo "== build $build_id is at $build_dir"
ls -l "$build_dir"
