# The two commands: `make train` (the default job) and `make test` (the whole suite).
# Both create .venv and install the package on first use.
VENV ?= .venv
PYTHON ?= python3
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist
WORDNET_DIR ?= /usr/share/wordnet
DEBIAN_DATA := dataset-fashion-mnist wordnet-base
ARGS ?=
STAMP := $(VENV)/.installed
export WANDB_MODE ?= offline
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: train test test-fast install data lint bench gpu-check clean

train: install data
	$(VENV)/bin/mrl-train $(ARGS)

test: install data
	$(VENV)/bin/pytest $(ARGS)

# The lane to run while working: every test not marked slow (about 2 minutes here).
test-fast: install data
	$(VENV)/bin/pytest -m "not slow" $(ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -e ".[dev]"
	@touch $(STAMP)

# Installs Debian's Fashion-MNIST and WordNet when missing and this user may install packages.
data:
	@if [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ] && [ -f $(WORDNET_DIR)/data.noun ]; then \
	  exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	else echo "note: Fashion-MNIST or WordNet is missing and this user cannot install them; run" \
	  "'sudo apt-get install $(DEBIAN_DATA)' or pass data.root=<dir with the files>"; \
	  exit 0; fi; \
	$$SUDO apt-get install -y -q $(DEBIAN_DATA) \
	  || { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q $(DEBIAN_DATA); } \
	  || echo "note: could not install $(DEBIAN_DATA); the jobs that need them will say so"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check mrl tests experiments

bench: install data
	$(VENV)/bin/python experiments/bench/step_time.py

# On a machine with one CUDA GPU: the gpu-marked tests and the GPU timings, in about 8 minutes;
# results in outputs/gpu_check/ (ARGS=--out DIR elsewhere). `ARGS=--dry-run` rehearses it on the CPU.
gpu-check: install
	$(VENV)/bin/python experiments/bench/gpu_check.py $(ARGS)

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache
