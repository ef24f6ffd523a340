# Two entry points: `make demo` and `make test`. Both build .venv from the pinned lock when missing.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-browser lint format install lock bench clean

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

# Lint first: a formatting or lint failure fails `make test`, and so CI. Two processes, each taking
# whole test files (module fixtures stay in one process): every test keeps its own data directory,
# dbt target, Prefect server and ports, so they never meet.
test: lint
	$(BIN)/python -m pytest -n 2 --dist loadfile

# The storefront page in a real headless Chromium: Debian's /usr/bin/chromium (apt-get install -y
# chromium; .ci/run installs it) driven by Playwright. Only the tests marked `browser`, which
# `make test` leaves out.
test-browser: $(STAMP)
	$(BIN)/python -m pytest -m browser

# ruff formats and lints the Python; sqlfluff (dbt templater) lints the SQL. The dbt templater
# compiles the project, whose profile needs a data directory: an empty one inside .venv.
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	mkdir -p $(VENV)/lint-data
	RTREC_DATA_DIR=$(VENV)/lint-data $(BIN)/sqlfluff lint dbt_project

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	mkdir -p $(VENV)/lint-data
	RTREC_DATA_DIR=$(VENV)/lint-data $(BIN)/sqlfluff fix dbt_project

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
