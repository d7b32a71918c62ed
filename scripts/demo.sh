#!/usr/bin/env bash
# The main job on the bundled sample: install what is needed, build a template from
# fixtures/sample-rootfs.tar with the envd stand-in, verify it, and print where it is.
#   --boot   also boot it for real: builds the small test kernel once (a few minutes on 2 cores,
#            cached in ~/.cache/e2b-artifact/), installs QEMU, and waits for the envd marker.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${E2B_ARTIFACT_VENV:-$repo/.venv}
want_boot=0
[ "${1:-}" = "--boot" ] && want_boot=1
bash "$repo/scripts/setup.sh"
tool="$venv/bin/e2b-artifact"
storage=${LOCAL_TEMPLATE_STORAGE_BASE_PATH:-$repo/.demo/templates}
kernels="$repo/.demo/fc-kernels"
kernel_version=vmlinux-6.1.102
host=()
if [ "$want_boot" = 1 ]; then
  kernel_dir=$(bash "$repo/scripts/build-test-kernels.sh" cmdline-ikconfig)
  kernel_version=test-cmdline-ikconfig
  mkdir -p "$kernels/$kernel_version"
  ln -sfn "$kernel_dir/vmlinux" "$kernels/$kernel_version/vmlinux.bin"
  host=(--set "HOST_KERNELS_DIR=$kernels")
  if ! command -v qemu-system-x86_64 >/dev/null || ! command -v qemu-img >/dev/null; then
    log=${E2B_ARTIFACT_SETUP_LOG:-$repo/.setup.log}
    echo "demo: apt-get install qemu-system-x86 qemu-utils (output in $log)" >&2
    apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends qemu-system-x86 qemu-utils \
      >>"$log" 2>&1 || { echo "error: installing QEMU failed"; echo "hint: see $log"; exit 4; } >&2
  fi
fi
build_id=$("$tool" --storage "$storage" build \
  --rootfs-tar "$repo/fixtures/sample-rootfs.tar" \
  --envd "$repo/fixtures/envd-standin/envd" --envd-version 0.0.0-standin \
  --template-id sample --disk-size-mb 64 --kernel-version "$kernel_version")
build_dir="$storage/$build_id"
echo "== built $build_id"
"$tool" --storage "$storage" "${host[@]}" verify "$build_id"
if [ "$want_boot" = 1 ]; then
  echo "== booting $build_id"
  "$tool" --storage "$storage" "${host[@]}" boot "$build_id" \
    --expect 'e2b-envd-standin: started'
fi
echo "== build $build_id is at $build_dir"
ls -l "$build_dir"
