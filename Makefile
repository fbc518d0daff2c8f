# Everything a fresh machine needs: `make demo` and `make test` set themselves up.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= synthetic
ARGS ?=
# Tests run in parallel on every core; override with `make test PYTEST_ARGS="-x -k config"`.
PYTEST_ARGS ?= -n auto

export WANDB_MODE ?= offline
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# img2dataset imports albumentations, which would check online for updates
export NO_ALBUMENTATIONS_UPDATE ?= 1

.PHONY: help setup test demo prep bench lint tokenizer clean

help:  ## list targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP)  ## create .venv with pinned dependencies (idempotent)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

tokenizer: setup  ## build (or reuse) the offline tokenizer under .cache/tokenizer, from the world's corpus
	$(PY) -m data_prep.synthetic.corpus --out .cache/corpus.jsonl
	$(PY) -m launch.tokenizer --corpus .cache/corpus.jsonl --out .cache/tokenizer

test: setup tokenizer  ## run the test suite
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup tokenizer  ## the whole recipe on the embedded default: make demo [FRESH=1] [ARGS="ranks=1 ..."]
	$(PY) -m launch.demo $(if $(FRESH),--fresh) $(ARGS)

prep: setup  ## prepare data: make prep DATA=<preset> ARGS="key=value ..."
	$(PY) -m data_prep --config configs/data/$(DATA).yaml $(ARGS)

bench: setup tokenizer  ## benchmarks; results under runs/bench/
	$(PY) -m bench

lint: setup  ## ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:  ## remove generated data and runs (keeps .venv and .cache)
	rm -rf data runs wandb
