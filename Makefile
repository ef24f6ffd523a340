# Two entry points: `make demo` and `make test`. Both build .venv from the pinned lock when missing.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install lock bench clean

install: $(STAMP)

# The lock pins everything but torch; torch is asked for by exact version so pip takes the CPU
# wheel here and the CUDA build (with its nvidia-* libraries) on a GPU host.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --no-deps -r requirements.lock
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rtrec demo

test: $(STAMP)
	$(BIN)/python -m pytest

# Every benchmark, one after another (tens of minutes); each script also runs on its own.
bench: $(STAMP)
	$(BIN)/python bench/generate_bench.py
	$(BIN)/python bench/dbt_bench.py
	$(BIN)/python bench/feature_bench.py
	$(BIN)/python bench/inference_bench.py
	$(BIN)/python bench/serving_bench.py
	$(BIN)/python bench/quality.py
	$(BIN)/python bench/pipeline_bench.py --events 100000 1000000

# Re-resolve the pins (needs uv); run after editing requirements.in or pyproject.toml dependencies.
lock:
	uv pip compile requirements.in -o requirements.lock --python-version 3.11 \
	  --python-platform x86_64-unknown-linux-gnu --no-header -q \
	  --no-emit-package torch --no-emit-package rtrec --no-emit-package triton \
	  $$(uv pip compile requirements.in --python-version 3.11 --python-platform x86_64-unknown-linux-gnu -q --no-header \
	     | grep -oE '^nvidia-[a-z0-9-]+' | sed 's/^/--no-emit-package /')

clean:
	rm -rf $(VENV) data
