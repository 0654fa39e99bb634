#!/usr/bin/env bash
# Set up, then run the scene-batch flow on embedded defaults: local object store (.worldstereo/store),
# Prefect's ephemeral API, a local Ray, the bundled synthetic scenes and the weight-free oracle generator.
# Extra arguments go to `worldstereo batch` (e.g. --generator warp, --frames 81 --scale 1.0).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A first start on a fresh machine compiles and migrates before the embedded Prefect server answers.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-600}"
# Demo-sized splats (the torch rasterizer on a CPU): 30 steps at a quarter of the frames' size, a 96^3 mesh.
export WORLDSTEREO_SPLAT__ITERATIONS="${WORLDSTEREO_SPLAT__ITERATIONS:-30}"
export WORLDSTEREO_SPLAT__RESOLUTION_SCALE="${WORLDSTEREO_SPLAT__RESOLUTION_SCALE:-0.25}"
export WORLDSTEREO_SPLAT__MESH_VOXELS="${WORLDSTEREO_SPLAT__MESH_VOXELS:-96}"
exec .venv/bin/worldstereo batch --samples --frames 21 --scale 0.5 "$@"
