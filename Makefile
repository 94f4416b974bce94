# Two commands do everything on a fresh machine:
#   make run    set up the service, then run it on its embedded default (SQLite)
#   make test   set up the service and its test tools (the dev extra), then run the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# One stamp per level: the service, then the dev extra on top (make test after make run adds only that)
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# CPU build by default. For CUDA: make install TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu128"
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install install-dev run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION) $(TORCH_INDEX)
	$(BIN)/pip install --quiet -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP)

install: $(STAMP)

install-dev: $(DEV_STAMP)

run: install
	$(BIN)/forecaster up --host $(HOST) --port $(PORT)

test: install-dev lint
	$(BIN)/pytest $(PYTEST_ARGS)

# ruff and mypy strict on the code (tests and benchmarks are not held to them)
lint: install-dev
	$(BIN)/ruff check forecaster api jobs
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/train.py
	$(BIN)/python bench/api.py

clean:
	rm -rf $(VENV) forecaster.db forecaster.db-wal forecaster.db-shm
