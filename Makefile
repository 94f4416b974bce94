# Two commands do everything on a fresh machine:
#   make run    set up, then run the service on its embedded default (SQLite)
#   make test   set up, then run the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CPU build by default. For CUDA: make install TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu128"
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION) $(TORCH_INDEX)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/forecaster up --host $(HOST) --port $(PORT)

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/train.py
	$(BIN)/python bench/api.py

clean:
	rm -rf $(VENV) forecaster.db forecaster.db-wal forecaster.db-shm
