#!/usr/bin/env bash
# One call on a GPU machine: train as the nightly-gpu deployment does, then print test NDCG@10 and
# HR@10 (served and alone), seconds, sequences/s and TFLOP/s per preset and seed (bench/gpu_train.py).
#   bash bench/gpu_train.sh [EVENTS]   a host that reaches the package registries: installs, generates
#                                      EVENTS events (default 2,000,000), builds the marts, trains gpu-large
#   MARTS=DIR bash bench/gpu_train.sh  a host that reaches nothing: its own python3 with PyTorch, numpy,
#                                      pandas, pyarrow, scipy and tqdm, the wheels in .whl for the rest, and
#                                      the marts in DIR with their item_content.parquet (e.g. MovieLens');
#                                      trains gpu-large and the default cpu preset over 3 seeds. Fetch the
#                                      wheels beforehand where pip works:
#     pip download --no-deps --only-binary=:all: --python-version <the host's> --platform manylinux2014_x86_64 -d .whl \
#       pydantic pydantic-core pydantic-settings annotated-types typing-inspection typing-extensions python-dotenv
#     (each at the version requirements.lock pins)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
if [[ -n "${MARTS:-}" ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/rtrec-site .whl/*.whl
  PYTHONPATH=/tmp/rtrec-site python3 bench/gpu_train.py --marts "$MARTS" --presets gpu-large cpu --seeds 0 1 2
  exit
fi
EVENTS=${1:-2000000}
make install >/dev/null
export RTREC_DATA_DIR=${RTREC_DATA_DIR:-$PWD/data-gpu}
.venv/bin/rtrec generate --users 50000 --items 10000 --events "$EVENTS" >/dev/null
.venv/bin/dbt build --project-dir dbt_project --profiles-dir dbt_project >/dev/null
.venv/bin/python -c "from flows.embed import embed_catalog; from rtrec.settings import get_settings; embed_catalog(get_settings().marts_dir)"
.venv/bin/python bench/gpu_train.py
