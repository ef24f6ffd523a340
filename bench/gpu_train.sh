#!/usr/bin/env bash
# One call on a lent GPU machine: install, generate a large sample, build the marts, train the
# gpu-large preset (bf16 autocast), check the loss went down, report sequences/s and TFLOP/s.
#   bash bench/gpu_train.sh [EVENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-2000000}
make install >/dev/null
export RTREC_DATA_DIR=${RTREC_DATA_DIR:-$PWD/data-gpu}
.venv/bin/rtrec generate --users 50000 --items 10000 --events "$EVENTS" >/dev/null
.venv/bin/dbt build --project-dir dbt_project --profiles-dir dbt_project >/dev/null
.venv/bin/python bench/gpu_train.py
