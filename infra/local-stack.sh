#!/usr/bin/env bash
# The whole stack on this machine, without Docker:
#   S3 server on loopback  SeaweedFS (`weed server` with filer and S3 gateway; scripts/setup.sh installs it),
#                          data under infra/.local-stack/seaweedfs, credentials required, telemetry off
#   Prefect server         `prefect server start` on its own SQLite database
#   work pool + worker     `worldstereo-process` (type process, no concurrency limit) and a worker on it
#   Ray head               `ray start --head` with this machine's CPUs (and GPUs)
#   webhook receiver       `worldstereo serve-webhook`: the filer posts every new object of the input bucket to it
# Writes infra/.env.local (`source infra/.env.local` to talk to the stack) and keeps databases, logs and
# process ids under infra/.local-stack/. Stop it with infra/stop-local-stack.sh.
#
# Ports and sizes (environment): S3_PORT=9000 PREFECT_PORT=4200 RAY_PORT=6379 WEBHOOK_PORT=8765, SeaweedFS's
# master, volume and filer on WEED_PORT=9330..9332, their gRPC and the S3 gateway's on 9333..9336; all on 127.0.0.1.
# RAY_CPUS=$(nproc) RAY_OBJECT_STORE_BYTES=4 GiB (an 81-frame 480p trajectory moves about 2 GB); credentials S3_ACCESS_KEY / S3_SECRET_KEY (generated
# once and kept in .env.local).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
STATE="$ROOT/infra/.local-stack"
ENV_FILE="$ROOT/infra/.env.local"
BIN="${VENV_BIN:-$ROOT/.venv/bin}"
POOL=worldstereo-process
S3_PORT="${S3_PORT:-9000}"
PREFECT_PORT="${PREFECT_PORT:-4200}"
RAY_PORT="${RAY_PORT:-6379}"
WEBHOOK_PORT="${WEBHOOK_PORT:-8765}"
WEED_PORT="${WEED_PORT:-9330}"
RAY_CPUS="${RAY_CPUS:-$(nproc)}"
RAY_OBJECT_STORE_BYTES="${RAY_OBJECT_STORE_BYTES:-$((4 * 1024 * 1024 * 1024))}"
RAY_TMP="/tmp/ray-worldstereo-$RAY_PORT"  # not /tmp/ray: a plain ray.init() elsewhere must not join this cluster

mkdir -p "$STATE/pids" "$STATE/logs"
for name in s3 prefect-server ray-head prefect-worker webhook; do
  if [ -f "$STATE/pids/$name.pid" ] && kill -0 "$(cat "$STATE/pids/$name.pid")" 2>/dev/null; then
    echo "the local stack is already running ($name); stop it with infra/stop-local-stack.sh" >&2
    exit 1
  fi
done

# Each service runs in a session of its own; its pid is the process group the stop script ends.
start() {
  local name="$1"; shift
  setsid "$@" >"$STATE/logs/$name.log" 2>&1 < /dev/null &
  echo $! >"$STATE/pids/$name.pid"
  echo "started $name (pid $!), log $STATE/logs/$name.log"
}

wait_for() {  # NAME URL SECONDS: until the URL answers any HTTP status
  local name="$1" url="$2" deadline=$((SECONDS + $3))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "$url")" != "000" ]; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 "$(cat "$STATE/pids/$name.pid")" 2>/dev/null; then
      echo "$name did not come up; last lines of its log:" >&2
      tail -n 30 "$STATE/logs/$name.log" >&2
      exit 1
    fi
    sleep 1
  done
}

# --- environment ---------------------------------------------------------------------------------
[ -x "$BIN/weed" ] || { echo "no $BIN/weed: run bash scripts/setup.sh first" >&2; exit 1; }
if [ -f "$ENV_FILE" ]; then  # keep the credentials of an earlier start (the objects outlive the stack)
  S3_ACCESS_KEY="${S3_ACCESS_KEY:-$(sed -n 's/^export WORLDSTEREO_STORAGE__ACCESS_KEY=//p' "$ENV_FILE")}"
  S3_SECRET_KEY="${S3_SECRET_KEY:-$(sed -n 's/^export WORLDSTEREO_STORAGE__SECRET_KEY=//p' "$ENV_FILE")}"
fi
S3_ACCESS_KEY="${S3_ACCESS_KEY:-worldstereo}"
S3_SECRET_KEY="${S3_SECRET_KEY:-$(openssl rand -hex 20)}"
WEBHOOK_TOKEN="${WEBHOOK_TOKEN:-$(openssl rand -hex 20)}"
WEBHOOK_URL="http://127.0.0.1:$WEBHOOK_PORT/events"
RAY_TOKEN_FILE="$STATE/ray-auth-token"  # Ray's token authentication: the head and every driver read this file
[ -s "$RAY_TOKEN_FILE" ] || (umask 077 && openssl rand -hex 32 >"$RAY_TOKEN_FILE")
cat >"$ENV_FILE" <<EOF
# Written by infra/local-stack.sh: \`source infra/.env.local\` to use the local stack.
export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api
export WORLDSTEREO_PROJECT_DIR=$ROOT
export WORLDSTEREO_STORAGE__BACKEND=s3
export WORLDSTEREO_STORAGE__ENDPOINT=127.0.0.1:$S3_PORT
export WORLDSTEREO_STORAGE__SECURE=false
export WORLDSTEREO_STORAGE__ACCESS_KEY=$S3_ACCESS_KEY
export WORLDSTEREO_STORAGE__SECRET_KEY=$S3_SECRET_KEY
export WORLDSTEREO_STORAGE__INPUT_BUCKET=worldstereo-input
export WORLDSTEREO_STORAGE__WORK_BUCKET=worldstereo-work
export WORLDSTEREO_RAY__ADDRESS=127.0.0.1:$RAY_PORT
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=$RAY_TOKEN_FILE
export WORLDSTEREO_WEBHOOK__TOKEN=$WEBHOOK_TOKEN
export WEBHOOK_URL=$WEBHOOK_URL
EOF
chmod 600 "$ENV_FILE"
set -a
# shellcheck source=/dev/null
source "$ENV_FILE"
set +a
export PATH="$BIN:$PATH"

# --- object store ---------------------------------------------------------------------------------
# The filer posts each change of the input bucket to the receiver (config in $STATE/seaweedfs/config).
WEED="$STATE/seaweedfs"
mkdir -p "$WEED/data" "$WEED/config"
(umask 077
 printf '[master.volume_growth]\ncopy_1 = 1\n' >"$WEED/config/master.toml"  # one volume per new bucket
 cat >"$WEED/config/notification.toml" <<EOF
[notification.webhook]
enabled = true
endpoint = "$WEBHOOK_URL"
bearer_token = "$WEBHOOK_TOKEN"
event_types = ["create", "update"]
path_prefixes = ["/buckets/$WORLDSTEREO_STORAGE__INPUT_BUCKET/"]
EOF
 cat >"$WEED/config/s3.json" <<EOF
{"identities": [{"name": "worldstereo", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                 "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$S3_SECRET_KEY"}]}]}
EOF
)
start s3 weed -config_dir="$WEED/config" server -dir="$WEED/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -master.port="$WEED_PORT" -volume.port="$((WEED_PORT + 1))" -filer -filer.port="$((WEED_PORT + 2))" \
  -master.port.grpc="$((WEED_PORT + 3))" -volume.port.grpc="$((WEED_PORT + 4))" \
  -filer.port.grpc="$((WEED_PORT + 5))" -s3.port.grpc="$((WEED_PORT + 6))" \
  -s3 -s3.port="$S3_PORT" -s3.config="$WEED/config/s3.json" -s3.port.iceberg=0 -s3.port.lance=0 \
  -master.telemetry=false -master.electionTimeout=1s -master.volumeSizeLimitMB=1024 -volume.max=100 \
  -volume.preStopSeconds=0
wait_for s3 "http://127.0.0.1:$S3_PORT/" 60
python - <<'EOF'
import time

from worldstereo.config import load_settings
from worldstereo.errors import StorageError
from worldstereo.storage import open_store

storage = load_settings().storage
store = open_store(storage)
deadline = time.monotonic() + 120
for bucket in (storage.input_bucket, storage.work_bucket):
    while True:  # the gateway answers before its filer and volume server are up
        try:
            store.ensure_bucket(bucket)
            break
        except StorageError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    print(f"bucket {bucket} ready")
store.require_conditional_writes(storage.work_bucket)
EOF

# --- Prefect server, Ray head ---------------------------------------------------------------------
PREFECT_HOME="$STATE/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false \
  start prefect-server prefect server start --host 127.0.0.1 --port "$PREFECT_PORT"
echo "$RAY_TMP" >"$STATE/ray-temp-dir"
start ray-head ray start --head --block --node-ip-address 127.0.0.1 --port "$RAY_PORT" --num-cpus "$RAY_CPUS" \
  --object-store-memory "$RAY_OBJECT_STORE_BYTES" --include-dashboard false --temp-dir "$RAY_TMP" --disable-usage-stats
wait_for prefect-server "$PREFECT_API_URL/health" 180

# --- work pool, worker, webhook -------------------------------------------------------------------
prefect work-pool inspect "$POOL" >/dev/null 2>&1 || prefect work-pool create --type process "$POOL"
prefect work-pool clear-concurrency-limit "$POOL" >/dev/null  # batches may overlap: scenes are claimed one by one
start prefect-worker prefect worker start --pool "$POOL" --type process
start webhook worldstereo serve-webhook --host 127.0.0.1 --port "$WEBHOOK_PORT"
wait_for webhook "http://127.0.0.1:$WEBHOOK_PORT/healthz" 60
python - <<'EOF'
import os

import ray

ray.init(address=os.environ["WORLDSTEREO_RAY__ADDRESS"], log_to_driver=False)
print("ray cluster:", ray.cluster_resources())
EOF

cat <<EOF

local stack up:
  Prefect UI        http://127.0.0.1:$PREFECT_PORT
  S3 endpoint       http://127.0.0.1:$S3_PORT  (buckets worldstereo-input, worldstereo-work)
  Ray               $WORLDSTEREO_RAY__ADDRESS
  webhook           $WEBHOOK_URL  (the filer posts new objects of worldstereo-input to it)
next:
  source infra/.env.local
  prefect --no-prompt deploy --all
  prefect deployment run scene-batch/scene-batch
stop: infra/stop-local-stack.sh
EOF
