#!/usr/bin/env bash
# Build the small Linux 6.1 guest kernels of the test suite from Debian's linux-source-6.1.
#
#   scripts/build-test-kernels.sh [VARIANT...]        build (or find cached) variants; default: all
#   scripts/build-test-kernels.sh --print-dir VARIANT print the cache directory of a variant (no build)
#   scripts/build-test-kernels.sh --list              print the variant names
#
# Each variant is tinyconfig + a minimal Firecracker-like fragment (below) + the variant's own options,
# built out-of-tree. After olddefconfig every wanted option is checked in the final .config (Kconfig
# dependencies drop options silently); a mismatch fails the build, as does a bzImage whose payload is
# not compressed as the config says.
#
# Several variants in one run build incrementally, in the order below: the first from scratch, each
# further one from a copy of the object directory of the closest variant already built in this run
# (fewest differing fragment lines; the ACPI one last), configured the same way (tinyconfig + fragment
# + olddefconfig); Kbuild's per-symbol dependencies recompile only what the changed options touch. An
# incremental build that fails is retried from scratch. Object directories are deleted once no later
# variant of the run needs them, and at the end.
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
  mkdir -p "$CACHE"
  local apt_log="$CACHE/apt.log"  # apt's own output; the terminal gets one line per step
  log "installing ${missing[*]} (apt's output: $apt_log)"
  local apt=(apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends)
  if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${missing[@]}" >>"$apt_log" 2>&1; then
    ((APT_UPDATED)) && apt_failed "$apt_log" "${missing[*]}"
    log "apt-get install failed; running apt-get update once and retrying"
    apt-get -o DPkg::Lock::Timeout=900 update -q >>"$apt_log" 2>&1
    APT_UPDATED=1
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${missing[@]}" >>"$apt_log" 2>&1 ||
      apt_failed "$apt_log" "${missing[*]}"
  fi
}

apt_failed() {
  tail -n 5 "$1" | sed 's/^/  | /' >&2
  die "could not install $2 (the full output is in $1)"
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
        log "$variant: wanted $line, got: $(grep -E "^(# )?${name}[= ]" "$config" || echo 'absent')"
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

# Object directories of this run, kept as seeds for the variants still to build (variant -> dir, and
# the build order for ties). A variant starts from a copy of the closest one; Kbuild's per-symbol
# dependency files (include/config/, fixdep) then recompile only what the changed options touch.
# Every build of the run happens at the same path ($RUN_DIR/build; a finished one is moved to
# $RUN_DIR/seed-<variant>): objtool's build records absolute paths, and objtool rebuilt at another path
# would be newer than every object and so recompile all of them.
declare -A SEED_OBJ=()
SEED_ORDER=()
RUN_DIR=
cleanup_objs() { [[ -z $RUN_DIR ]] || rm -rf "$RUN_DIR"; }

# How far apart two variants are: the number of fragment lines only one of them has.
fragment_distance() { comm -3 <(fragment "$1" | sort) <(fragment "$2" | sort) | wc -l; }

# The kept seed closest to a variant (the latest built one on a tie); nothing when no seed is kept.
best_seed() {
  local variant=$1 s d best='' best_d=''
  for s in "${SEED_ORDER[@]}"; do
    [[ -n ${SEED_OBJ[$s]:-} ]] || continue
    d=$(fragment_distance "$variant" "$s")
    if [[ -z $best_d ]] || ((d <= best_d)); then best=$s best_d=$d; fi
  done
  printf '%s\n' "$best"
}

# The compression of a bzImage's payload (boot protocol: setup_sects at 0x1f1, payload_offset at 0x248).
bzimage_compression() {
  local f=$1 sects off magic
  sects=$(od -An -tu1 -j$((0x1f1)) -N1 "$f" | tr -d ' ')
  ((sects)) || sects=4
  off=$(od -An -tu4 -j$((0x248)) -N4 "$f" | tr -d ' ')
  magic=$(od -An -tx1 -j$(((sects + 1) * 512 + off)) -N6 "$f" | tr -d ' \n')
  case $magic in
    1f8b*) echo gzip ;; fd377a585a00) echo xz ;; 28b52ffd*) echo zstd ;; 02214c18*) echo lz4 ;;
    5d00*) echo lzma ;; 425a68*) echo bzip2 ;; 894c5a4f*) echo lzo ;; *) echo "unknown ($magic)" ;;
  esac
}

# Configure and build a variant in obj (empty, or a copy of another variant's object directory).
# Configuration problems are fatal; a failed make returns 1 (the caller may retry from scratch).
make_variant() {
  local variant=$1 src=$2 obj=$3
  local make=(make -C "$src" O="$obj" ARCH=x86_64 -j"$(nproc)")
  # Kconfig's chatter (every override of tinyconfig is a warning) goes to a log, shown on failure.
  # tinyconfig starts from nothing: a seed's .config does not leak into the new one.
  "${make[@]}" -s tinyconfig >"$obj/config.log" 2>&1 || { cat "$obj/config.log" >&2; die "$variant: tinyconfig failed"; }
  fragment "$variant" >"$obj/fragment.config"
  # Later assignments win in Kconfig's reader: the fragment overrides tinyconfig's choices.
  cat "$obj/fragment.config" >>"$obj/.config"
  "${make[@]}" -s olddefconfig >>"$obj/config.log" 2>&1 || { cat "$obj/config.log" >&2; die "$variant: olddefconfig failed"; }
  check_config "$variant" "$obj/.config"
  log "$variant: building vmlinux and bzImage with $(nproc) jobs"
  if ! "${make[@]}" vmlinux bzImage >"$obj/build.log" 2>&1; then
    tail -n 40 "$obj/build.log" >&2
    log "$variant: kernel build failed (full log: $obj/build.log)"
    return 1
  fi
  # The build must not have changed the configuration behind our back.
  check_config "$variant" "$obj/.config"
  # Nor may a seed's bzImage (another compressor) have survived.
  local want got
  want=$(sed -n 's/^CONFIG_KERNEL_\(GZIP\|XZ\|ZSTD\|LZ4\|LZMA\|BZIP2\|LZO\)=y$/\1/p' "$obj/.config" | tr '[:upper:]' '[:lower:]')
  got=$(bzimage_compression "$obj/arch/x86/boot/bzImage")
  [[ $got == "$want" ]] || { log "$variant: bzImage payload is $got, the config says $want"; return 1; }
}

# build_variant VARIANT VERSION [LATER...]: LATER are the variants this run builds afterwards (for
# which object directories are kept as seeds).
build_variant() {
  local variant=$1 version=$2 dir src obj tmp start seed
  shift 2
  dir=$(variant_dir "$variant" "$version")
  if is_complete "$dir"; then
    log "$variant: cached in $dir"
    RESULT[$variant]=$dir
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
    RESULT[$variant]=$dir
    return
  fi
  src=$(ensure_source "$version")
  start=$SECONDS
  [[ -n $RUN_DIR ]] || RUN_DIR=$(mktemp -d "$CACHE/.obj.XXXXXX")
  obj=$RUN_DIR/build
  rm -rf "$obj"
  seed=$(best_seed "$variant")
  if [[ -n $seed ]]; then
    log "$variant: configuring in $obj, starting from the objects of $seed"
    cp -a --reflink=auto "${SEED_OBJ[$seed]}" "$obj"
    # The build number (uname -v "#1") as in a build from scratch.
    rm -f "$obj/.version" "$obj/arch/x86/boot/bzImage"
  else
    log "$variant: configuring in $obj"
    mkdir "$obj"
  fi
  if ! make_variant "$variant" "$src" "$obj"; then
    [[ -n $seed ]] || die "$variant: kernel build failed (full log: $obj/build.log)"
    log "$variant: the build from the objects of $seed failed; building from scratch"
    rm -rf "$obj"
    mkdir "$obj"
    make_variant "$variant" "$src" "$obj" || die "$variant: kernel build failed (full log: $obj/build.log)"
  fi
  tmp=$(mktemp -d "$CACHE/.$variant.XXXXXX")
  cp "$obj/vmlinux" "$tmp/vmlinux"
  cp "$obj/arch/x86/boot/bzImage" "$tmp/bzImage"
  cp "$obj/.config" "$tmp/config"
  cp "$obj/fragment.config" "$tmp/fragment.config"
  chmod 0755 "$tmp"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  exec {lock}>&-
  # Keep object directories only while a later variant of this run (not built meanwhile) would start
  # from them. A seed that is not the closest now never becomes so: later builds only add seeds.
  mv "$obj" "$RUN_DIR/seed-$variant"
  SEED_OBJ[$variant]=$RUN_DIR/seed-$variant
  SEED_ORDER+=("$variant")
  local s later needed
  for s in "${SEED_ORDER[@]}"; do
    [[ -n ${SEED_OBJ[$s]:-} ]] || continue
    needed=0
    for later in "$@"; do
      is_complete "$(variant_dir "$later" "$version")" && continue
      [[ $(best_seed "$later") == "$s" ]] && { needed=1; break; }
    done
    ((needed)) || { rm -rf "${SEED_OBJ[$s]}"; SEED_OBJ[$s]=; }
  done
  # Older builds of this variant (another fragment or source version) are of no further use.
  local old
  for old in "$CACHE/$variant"-*; do
    [[ $old != "$dir" && -d $old && $(basename "$old") =~ ^$variant-[0-9a-f]{12}$ ]] || continue
    log "$variant: removing the outdated build $old"
    rm -rf "$old"
  done
  log "$variant: built in $((SECONDS - start)) s${seed:+ (from $seed)}: $dir (vmlinux $(stat -c %s "$dir/vmlinux") B," \
    "bzImage $(stat -c %s "$dir/bzImage") B, $(bzimage_compression "$dir/bzImage"))"
  RESULT[$variant]=$dir
}

declare -A RESULT=()
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
  # Build in the order of VARIANTS (each one close to an earlier one; ACPI, the farthest, last); print
  # the results in the order asked for.
  local -a order=()
  for variant in "${VARIANTS[@]}"; do
    [[ " ${wanted[*]} " == *" $variant "* ]] && order+=("$variant")
  done
  trap cleanup_objs EXIT
  local i
  for i in "${!order[@]}"; do build_variant "${order[i]}" "$version" "${order[@]:i+1}"; done
  cleanup_objs
  RUN_DIR=
  trap - EXIT
  for variant in "${wanted[@]}"; do printf '%s\n' "${RESULT[$variant]}"; done
}

main "$@"
