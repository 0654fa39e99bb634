#!/usr/bin/env bash
# Stop what infra/local-stack.sh started (each service's process group, by the ids it recorded), within 10 s:
# every group gets SIGTERM at once, and what still runs after STOP_GRACE_S (6) seconds gets SIGKILL. A flow
# run cut short this way stays resumable: its scenes' claims expire and `rerun-failed` picks them up.
# Data stays under infra/.local-stack/ (SeaweedFS objects, the Prefect database); --purge removes it, Ray's
# session directory and infra/.env.local too.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE="$PWD/infra/.local-stack"
GRACE="${STOP_GRACE_S:-6}"

declare -A groups=()
for name in webhook prefect-worker ray-head prefect-server s3; do
  pidfile="$STATE/pids/$name.pid"
  [ -f "$pidfile" ] || continue
  pid="$(cat "$pidfile")"
  if kill -0 -- "-$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    groups[$name]="$pid"
  fi
  rm -f "$pidfile"
done

deadline=$((SECONDS + GRACE))
for name in "${!groups[@]}"; do
  pid="${groups[$name]}"
  while kill -0 -- "-$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  if kill -0 -- "-$pid" 2>/dev/null; then
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "stopped $name (process group $pid, killed after ${GRACE} s)"
  else
    echo "stopped $name (process group $pid)"
  fi
done

# Ray's workers run in sessions of their own: end those of this stack's Ray (named by its temp directory).
if [ -f "$STATE/ray-temp-dir" ]; then
  ray_tmp="$(cat "$STATE/ray-temp-dir")"
  for pid in $(pgrep -f -- "$ray_tmp/" || true); do
    kill -KILL "$pid" 2>/dev/null && echo "stopped Ray process $pid" || true
  done
fi

if [ "${1:-}" = "--purge" ]; then
  [ -f "$STATE/ray-temp-dir" ] && rm -rf "$(cat "$STATE/ray-temp-dir")"
  rm -rf "$STATE" "$PWD/infra/.env.local"
  echo "removed $STATE, Ray's session directory and infra/.env.local"
fi
