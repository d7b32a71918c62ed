#!/bin/bash
# A reproducible Debian input for scripts/bench_image.py --debian: debootstrap bookworm --variant=minbase
# (from deb.debian.org, as root), then a two-layer gzip OCI layout made with umoci:
#   layer 1: the debootstrap tree as it is;
#   layer 2: what an image build typically does next: docs, man pages and apt's lists and caches removed
#            (whiteouts), a file added.
# Everything is cached under ${E2B_ARTIFACT_CACHE:-~/.cache/e2b-artifact}/debian-bookworm/ so a rerun is instant:
#   minbase.tar   the debootstrap tree (tar -cp --xattrs, made once)
#   layout/       the OCI layout, tag "bookworm"
# Prints the layout directory on stdout. Needs root (debootstrap, umoci unpack with owners) and network for the
# first run; without network it exits 4 and says so.
set -euo pipefail
cache="${E2B_ARTIFACT_CACHE:-$HOME/.cache/e2b-artifact}/debian-bookworm"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
mkdir -p "$cache"
if [ "$(id -u)" != 0 ]; then echo "error: make-debian-oci.sh needs root (debootstrap)" >&2; exit 3; fi
if [ ! -s "$cache/minbase.tar" ]; then
    work="$(mktemp -d "$cache/.debootstrap.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    if ! debootstrap --variant=minbase bookworm "$work/tree" "$mirror" >"$work/log" 2>&1; then
        tail -5 "$work/log" >&2
        echo "error: debootstrap from $mirror failed (no network?)" >&2
        echo "hint: set DEBIAN_MIRROR to a reachable mirror, or use bench_image.py without --debian" >&2
        exit 4
    fi
    tar -C "$work/tree" --xattrs --numeric-owner -cpf "$work/minbase.tar" .
    mv "$work/minbase.tar" "$cache/minbase.tar"
    rm -rf "$work"
    trap - EXIT
fi
if [ ! -f "$cache/layout/index.json" ]; then
    work="$(mktemp -d "$cache/.layout.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    umoci init --layout "$work/layout"
    umoci new --image "$work/layout:bookworm"
    umoci unpack --image "$work/layout:bookworm" "$work/bundle" >/dev/null
    tar -C "$work/bundle/rootfs" --xattrs --numeric-owner -xpf "$cache/minbase.tar"
    umoci repack --refresh-bundle --image "$work/layout:bookworm" "$work/bundle"
    rm -rf "$work/bundle/rootfs/usr/share/doc" "$work/bundle/rootfs/usr/share/man" \
           "$work/bundle/rootfs/var/lib/apt/lists/"* "$work/bundle/rootfs/var/cache/apt/"*.bin
    echo "e2b" > "$work/bundle/rootfs/etc/hostname"
    umoci repack --refresh-bundle --image "$work/layout:bookworm" "$work/bundle"
    umoci gc --layout "$work/layout"
    rm -rf "$work/bundle"
    mv "$work/layout" "$cache/layout"
    rm -rf "$work"
    trap - EXIT
fi
echo "$cache/layout"
