#!/usr/bin/env bash
# Stop what infra/local-stack.sh started (each service's process group, by the ids it recorded).
# Data stays under infra/.local-stack/ (MinIO objects, the Prefect database); --purge removes it, Ray's
# session directory and infra/.env.local too.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE="$PWD/infra/.local-stack"

for name in webhook prefect-worker ray-head prefect-server s3; do
  pidfile="$STATE/pids/$name.pid"
  [ -f "$pidfile" ] || continue
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 45); do  # a Ray head drains for up to 30 s
      kill -0 -- "-$pid" 2>/dev/null || break
      sleep 1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "stopped $name (process group $pid)"
  fi
  rm -f "$pidfile"
done

if [ "${1:-}" = "--purge" ]; then
  [ -f "$STATE/ray-temp-dir" ] && rm -rf "$(cat "$STATE/ray-temp-dir")"
  rm -rf "$STATE" "$PWD/infra/.env.local"
  echo "removed $STATE, Ray's session directory and infra/.env.local"
fi
