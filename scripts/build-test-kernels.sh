#!/usr/bin/env bash
# Build the small Linux 6.1 guest kernels of the test suite from Debian's linux-source-6.1.
#
#   scripts/build-test-kernels.sh [VARIANT...]        build (or find cached) variants; default: all
#   scripts/build-test-kernels.sh --print-dir VARIANT print the cache directory of a variant (no build)
#   scripts/build-test-kernels.sh --list              print the variant names
#
# Each variant is tinyconfig + a minimal Firecracker-like fragment (below) + the variant's own options,
# built out-of-tree. After olddefconfig every wanted option is checked in the final .config (Kconfig
# dependencies drop options silently); a mismatch fails the build.
#
#   cmdline-ikconfig     IKCONFIG=y, VIRTIO_MMIO_CMDLINE_DEVICES=y, no ACPI        bzImage: gzip
#   cmdline-noikconfig   no IKCONFIG, VIRTIO_MMIO_CMDLINE_DEVICES=y, no ACPI       bzImage: xz
#   nocmdline-noacpi     IKCONFIG=y, no CMDLINE_DEVICES, no ACPI (finds no disk)   bzImage: zstd
#   acpi-nocmdline       IKCONFIG=y, ACPI=y (+PCI=y, see below), no CMDLINE_DEVICES bzImage: lz4 (legacy frame)
#
# Results: ${E2B_ARTIFACT_TEST_KERNELS:-~/.cache/e2b-artifact/test-kernels}/<variant>-<key>/ with
# vmlinux (ELF with PVH note and .symtab), bzImage, config (the kernel's final .config). <key> hashes the
# fragment of the variant and the linux-source-6.1 package version. Directories appear complete or not
# at all (built in a temp dir, renamed into place). Progress goes to stderr; stdout gets one result
# directory per variant.
set -euo pipefail

VARIANTS=(cmdline-ikconfig cmdline-noikconfig nocmdline-noacpi acpi-nocmdline)
CACHE=${E2B_ARTIFACT_TEST_KERNELS:-$HOME/.cache/e2b-artifact/test-kernels}
SOURCE_PKG=linux-source-6.1
SOURCE_TAR=/usr/src/linux-source-6.1.tar.xz
# Bump when the build recipe (not the fragment) changes in a way that changes the result.
RECIPE=1

log() { printf 'build-test-kernels: %s\n' "$*" >&2; }
die() { printf 'build-test-kernels: error: %s\n' "$*" >&2; exit 1; }

# The options every variant gets: a kernel Firecracker (and QEMU's microvm) can boot from an ELF vmlinux
# to /sbin/init on a virtio-blk ext4 root with a serial console.
base_fragment() {
  cat <<'EOF'
CONFIG_64BIT=y
CONFIG_PRINTK=y
CONFIG_PRINTK_TIME=y
CONFIG_TTY=y
CONFIG_SERIAL_8250=y
CONFIG_SERIAL_8250_CONSOLE=y
CONFIG_BLOCK=y
CONFIG_VIRTIO_MENU=y
CONFIG_VIRTIO_MMIO=y
CONFIG_VIRTIO_BLK=y
CONFIG_EXT4_FS=y
CONFIG_DEVTMPFS=y
CONFIG_DEVTMPFS_MOUNT=y
CONFIG_BINFMT_ELF=y
CONFIG_BINFMT_SCRIPT=y
CONFIG_PROC_FS=y
CONFIG_SYSFS=y
CONFIG_FUTEX=y
CONFIG_HYPERVISOR_GUEST=y
CONFIG_PARAVIRT=y
CONFIG_KVM_GUEST=y
CONFIG_PVH=y
# CONFIG_MODULES is not set
EOF
}

variant_fragment() {
  case "$1" in
    cmdline-ikconfig)
      printf '%s\n' 'CONFIG_IKCONFIG=y' 'CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y' '# CONFIG_ACPI is not set' \
        '# CONFIG_PCI is not set' 'CONFIG_KERNEL_GZIP=y' ;;
    cmdline-noikconfig)
      printf '%s\n' '# CONFIG_IKCONFIG is not set' 'CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y' \
        '# CONFIG_ACPI is not set' '# CONFIG_PCI is not set' 'CONFIG_KERNEL_XZ=y' ;;
    nocmdline-noacpi)
      printf '%s\n' 'CONFIG_IKCONFIG=y' '# CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set' \
        '# CONFIG_ACPI is not set' '# CONFIG_PCI is not set' 'CONFIG_KERNEL_ZSTD=y' ;;
    acpi-nocmdline)
      # Devices only through ACPI (the DSDT's LNRO0005 nodes: QEMU microvm,acpi=on; Firecracker >= 1.8).
      # CONFIG_PCI=y is needed, though no PCI device is used: in Linux 6.1 ACPICA installs a default
      # PCI_Config region handler for every namespace, and without CONFIG_PCI that fails, so the tables
      # never load ("ACPI Error: AE_BAD_PARAMETER, During Region initialization", "ACPI: Unable to load
      # the System Description Tables") and no disk appears. No PCI drivers (virtio, 8250, VGA arbiter).
      printf '%s\n' 'CONFIG_IKCONFIG=y' '# CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set' 'CONFIG_ACPI=y' \
        'CONFIG_PCI=y' '# CONFIG_VIRTIO_PCI is not set' '# CONFIG_SERIAL_8250_PCI is not set' \
        '# CONFIG_SERIAL_8250_LPSS is not set' '# CONFIG_SERIAL_8250_MID is not set' '# CONFIG_VGA_ARB is not set' \
        '# CONFIG_PCIEASPM is not set' 'CONFIG_KERNEL_LZ4=y' ;;
    *) die "unknown variant '$1' (known: ${VARIANTS[*]})" ;;
  esac
}

fragment() { base_fragment; variant_fragment "$1"; }

source_version() {
  local v
  if v=$(dpkg-query -W -f='${Status} ${Version}' "$SOURCE_PKG" 2>/dev/null) && [[ $v == "install ok installed "* ]]; then
    printf '%s\n' "${v##* }"
    return
  fi
  # Not installed yet: the version apt would install (what the build will use).
  v=$(apt-cache policy "$SOURCE_PKG" 2>/dev/null | awk '/Candidate:/ {print $2}')
  if [[ -z $v || $v == "(none)" ]]; then
    apt-get -o DPkg::Lock::Timeout=900 update -qq >&2 || true
    v=$(apt-cache policy "$SOURCE_PKG" 2>/dev/null | awk '/Candidate:/ {print $2}')
  fi
  [[ -n $v && $v != "(none)" ]] || die "no version of $SOURCE_PKG is known to apt"
  printf '%s\n' "$v"
}

variant_key() {
  { printf 'recipe %s\nsource %s %s\n' "$RECIPE" "$SOURCE_PKG" "$2"; fragment "$1"; } | sha256sum | cut -c1-12
}

variant_dir() { printf '%s/%s-%s\n' "$CACHE" "$1" "$(variant_key "$1" "$2")"; }

is_complete() { [[ -s $1/vmlinux && -s $1/bzImage && -s $1/config ]]; }

APT_UPDATED=0
ensure_packages() {
  local pkg missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]}"
  local apt=(apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends)
  if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${missing[@]}" >&2; then
    ((APT_UPDATED)) && die "could not install ${missing[*]}"
    log "apt-get install failed; running apt-get update once and retrying"
    apt-get -o DPkg::Lock::Timeout=900 update -q >&2
    APT_UPDATED=1
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${missing[@]}" >&2 || die "could not install ${missing[*]}"
  fi
}

# The extracted source tree, one per linux-source version, kept between runs.
ensure_source() {
  local version=$1 src="$CACHE/src/linux-source-6.1_$1"
  if [[ ! -f $src/Makefile ]]; then
    [[ -f $SOURCE_TAR ]] || die "$SOURCE_TAR is missing although $SOURCE_PKG is installed"
    log "extracting $SOURCE_TAR (once, into $CACHE/src)"
    mkdir -p "$CACHE/src"
    local tmp
    tmp=$(mktemp -d "$CACHE/src/.extract.XXXXXX")
    tar -xJf "$SOURCE_TAR" -C "$tmp"
    [[ -f $tmp/linux-source-6.1/Makefile ]] || die "unexpected layout of $SOURCE_TAR"
    rm -rf "$src"
    mv "$tmp/linux-source-6.1" "$src"
    rmdir "$tmp"
  fi
  printf '%s\n' "$src"
}

# Every CONFIG_ line of the fragment must hold in the final .config exactly ("=y", or "is not set"
# meaning absent or "# ... is not set").
check_config() {
  local variant=$1 config=$2 line name bad=0
  while IFS= read -r line; do
    if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
      name=${BASH_REMATCH[1]}
      if ! grep -qxF -- "$line" "$config"; then
        log "$variant: wanted $line, got: $(grep -E "^(# )?$name[= ]" "$config" || echo 'absent')"
        bad=1
      fi
    elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
      name=${BASH_REMATCH[1]}
      if grep -qE "^$name=" "$config"; then
        log "$variant: wanted '$line', got: $(grep -E "^$name=" "$config")"
        bad=1
      fi
    fi
  done < <(fragment "$variant")
  ((bad == 0)) || die "$variant: the final .config lacks wanted options (a Kconfig dependency dropped them)"
}

build_variant() {
  local variant=$1 version=$2 dir src obj tmp start
  dir=$(variant_dir "$variant" "$version")
  if is_complete "$dir"; then
    log "$variant: cached in $dir"
    printf '%s\n' "$dir"
    return
  fi
  # One build at a time per cache (two test runs may ask at once); the other one then finds it done.
  mkdir -p "$CACHE"
  local lock
  exec {lock}>"$CACHE/.build.lock"
  if ! flock -n "$lock"; then
    log "$variant: waiting for another build in $CACHE"
    flock "$lock"
  fi
  if is_complete "$dir"; then
    exec {lock}>&-
    log "$variant: built meanwhile by another run: $dir"
    printf '%s\n' "$dir"
    return
  fi
  src=$(ensure_source "$version")
  start=$SECONDS
  obj=$(mktemp -d "$CACHE/.obj-$variant.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$obj'" EXIT
  local make=(make -C "$src" O="$obj" ARCH=x86_64 -j"$(nproc)")
  log "$variant: configuring in $obj"
  # Kconfig's chatter (every override of tinyconfig is a warning) goes to a log, shown on failure.
  "${make[@]}" -s tinyconfig >"$obj/config.log" 2>&1 || { cat "$obj/config.log" >&2; die "$variant: tinyconfig failed"; }
  fragment "$variant" >"$obj/fragment.config"
  # Later assignments win in Kconfig's reader: the fragment overrides tinyconfig's choices.
  cat "$obj/fragment.config" >>"$obj/.config"
  "${make[@]}" -s olddefconfig >>"$obj/config.log" 2>&1 || { cat "$obj/config.log" >&2; die "$variant: olddefconfig failed"; }
  check_config "$variant" "$obj/.config"
  log "$variant: building vmlinux and bzImage with $(nproc) jobs"
  if ! "${make[@]}" vmlinux bzImage >"$obj/build.log" 2>&1; then
    tail -n 40 "$obj/build.log" >&2
    die "$variant: kernel build failed (full log: $obj/build.log)"
  fi
  # The build must not have changed the configuration behind our back.
  check_config "$variant" "$obj/.config"
  tmp=$(mktemp -d "$CACHE/.$variant.XXXXXX")
  cp "$obj/vmlinux" "$tmp/vmlinux"
  cp "$obj/arch/x86/boot/bzImage" "$tmp/bzImage"
  cp "$obj/.config" "$tmp/config"
  cp "$obj/fragment.config" "$tmp/fragment.config"
  chmod 0755 "$tmp"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  rm -rf "$obj"
  trap - EXIT
  exec {lock}>&-
  # Older builds of this variant (another fragment or source version) are of no further use.
  local old
  for old in "$CACHE/$variant"-*; do
    [[ $old != "$dir" && -d $old && $(basename "$old") =~ ^$variant-[0-9a-f]{12}$ ]] || continue
    log "$variant: removing the outdated build $old"
    rm -rf "$old"
  done
  log "$variant: built in $((SECONDS - start)) s: $dir (vmlinux $(stat -c %s "$dir/vmlinux") B," \
    "bzImage $(stat -c %s "$dir/bzImage") B)"
  printf '%s\n' "$dir"
}

main() {
  local print_dir=0 variant version
  local -a wanted=()
  while (($#)); do
    case "$1" in
      --print-dir) print_dir=1 ;;
      --list) printf '%s\n' "${VARIANTS[@]}"; return ;;
      -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; return ;;
      -*) die "unknown option $1" ;;
      *) variant_fragment "$1" >/dev/null; wanted+=("$1") ;;
    esac
    shift
  done
  ((${#wanted[@]})) || wanted=("${VARIANTS[@]}")
  if ((print_dir)); then
    version=$(source_version)
    for variant in "${wanted[@]}"; do variant_dir "$variant" "$version"; done
    return
  fi
  # Fast path: everything cached, no package checks needed beyond the source version.
  version=$(source_version)
  local all_cached=1
  for variant in "${wanted[@]}"; do is_complete "$(variant_dir "$variant" "$version")" || all_cached=0; done
  if ((all_cached == 0)); then
    ensure_packages "$SOURCE_PKG" build-essential flex bison bc libelf-dev libssl-dev xz-utils cpio kmod \
      lz4 zstd
    version=$(source_version)
  fi
  for variant in "${wanted[@]}"; do build_variant "$variant" "$version"; done
}

main "$@"
