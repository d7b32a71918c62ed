#!/usr/bin/env bash
# Install what e2b-artifact needs on Debian 12 (as root). `--test` adds what the test suite needs.
# Idempotent: a second run installs nothing. The package goes into a virtualenv ($E2B_ARTIFACT_VENV,
# default <repo>/.venv) so Debian's system Python is left alone.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${E2B_ARTIFACT_VENV:-$repo/.venv}
python=${PYTHON:-python3}
want_test=0
[ "${1:-}" = "--test" ] && want_test=1
say() { echo "setup: $*" >&2; }
# apt's and pip's own output goes to this log; the terminal gets one line per step.
log=${E2B_ARTIFACT_SETUP_LOG:-$repo/.setup.log}
: >"$log"
# step DESCRIPTION CMD...: run CMD with its output in the log; on failure, name the step and the log.
step() {
  local what=$1; shift
  say "$what"
  local rc=0
  "$@" >>"$log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    echo "error: setup step failed: $what (exit $rc)" >&2
    echo "hint: the full output is in $log; its last lines:" >&2
    tail -n 5 "$log" | sed 's/^/  | /' >&2
    exit 4
  fi
}
export DEBIAN_FRONTEND=noninteractive
apt_install() { step "apt-get install $*" apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "$@"; }
updated=0
apt_update() { [ "$updated" = 1 ] || { step "apt-get update" apt-get -o DPkg::Lock::Timeout=900 update -q; updated=1; }; }
missing() { for p in "$@"; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"; done; }
as_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "error: missing Debian packages: $*" >&2
    echo "hint: run this script as root (sudo bash $0 ${1:-}) or install them yourself" >&2
    exit 4
  fi
}

# e2fsprogs >= 1.47.1 reads tarballs in `mke2fs -d`; bookworm has 1.47.0, bookworm-backports 1.47.2.
e2fs_version() { mke2fs -V 2>&1 | sed -n 's/^mke2fs \([0-9.]*\).*/\1/p' | head -n1; }
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }
current=$(e2fs_version || true)
if [ -z "$current" ] || ! version_ge "$current" 1.47.1; then
  as_root e2fsprogs
  codename=$(. /etc/os-release 2>/dev/null; echo "${VERSION_CODENAME:-}")
  if [ "$codename" = bookworm ]; then
    if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
      say "adding bookworm-backports for e2fsprogs >= 1.47.1"
      printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        > /etc/apt/sources.list.d/bookworm-backports.sources
    fi
    apt_update
    if ! apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends -t bookworm-backports e2fsprogs \
        >>"$log" 2>&1; then
      say "backports unavailable: using e2fsprogs $current (slower debugfs fix-up path; details in $log)"
    fi
  else
    apt_update
    apt_install e2fsprogs
  fi
fi
say "e2fsprogs $(e2fs_version)"

packages=(e2fsprogs libarchive13 coreutils)
if [ "$want_test" = 1 ]; then
  mapfile -t extra < <(grep -v '^\s*#' "$repo/scripts/apt-packages.txt" | sed 's/\s*#.*//' | awk 'NF')
  packages+=("${extra[@]}")
fi
need=$(missing "${packages[@]}")
if [ -n "$need" ]; then
  as_root $need
  apt_update
  # shellcheck disable=SC2086
  apt_install $need
fi

if [ ! -x "$venv/bin/python" ]; then
  say "creating virtualenv $venv"
  if ! "$python" -m venv "$venv" >>"$log" 2>&1; then
    as_root python3-venv
    apt_update
    apt_install python3-venv python3-pip
    rm -rf "$venv"
    step "creating virtualenv $venv" "$python" -m venv "$venv"
  fi
fi
extras=""
[ "$want_test" = 1 ] && extras="[test]"
step "pip install e2b-artifact$extras into $venv" \
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$repo$extras"
# The codecs are plain dependencies (no extra): V4/V5 headers, compressed builds and kernel payloads need them.
step "check the lz4 and zstandard codecs import" \
  "$venv/bin/python" -c "import lz4.block, lz4.frame, zstandard"
# An editable install leaves the package uncompiled, and where PYTHONDONTWRITEBYTECODE is set (or the tree is
# read-only) every command then compiles its ~100 modules again: 50-90 ms a run (verify --quick: 0.28 -> 0.23 s).
# Python still reads these files when they are current and ignores them once a source is newer.
step "compile the package's bytecode" "$venv/bin/python" -m compileall -q "$repo/e2b_artifacts"
say "ready: $venv/bin/e2b-artifact"
