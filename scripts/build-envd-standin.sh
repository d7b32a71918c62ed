#!/usr/bin/env bash
# Build the envd stand-in (fixtures/envd-standin/envd) from its C source: static, no libc.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
src="$here/fixtures/envd-standin/envd-standin.c"
out="${1:-$here/fixtures/envd-standin/envd}"
tmp="$out.tmp.$$"
gcc -Os -static -nostdlib -fno-stack-protector -fno-asynchronous-unwind-tables -Wl,--build-id=none -s \
    -o "$tmp" "$src"
chmod 0755 "$tmp"
mv -f "$tmp" "$out"
echo "$out"
