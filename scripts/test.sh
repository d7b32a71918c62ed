#!/usr/bin/env bash
# Install the test needs (scripts/setup.sh --test), build the cached test kernels, run the whole suite.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${E2B_ARTIFACT_VENV:-$repo/.venv}
bash "$repo/scripts/setup.sh" --test
if [ -x "$repo/scripts/build-test-kernels.sh" ]; then
  bash "$repo/scripts/build-test-kernels.sh" >&2
fi
cd "$repo"
export PATH="$venv/bin:$PATH"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
