# One-command set-up on a fresh machine: `make test` and `make demo` create .venv when missing,
# install torch 2.13.0 only when no torch is present (an unpinned torch pulls GBs of CUDA wheels),
# then install this package with all its extras.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fusar-installed
TORCH_PIN := torch==2.13.0

.PHONY: install test demo base lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --disable-pip-version-check "$(TORCH_PIN)"
	$(BIN)/pip install --disable-pip-version-check -e ".[all]"
	@touch $(STAMP)

install: $(STAMP)

test: install
	$(BIN)/ruff check fusar_gpt tests benchmarks
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/fusar-gpt demo

# re-make the committed base model of the demo (assets/demo-base) with its recorded recipe (~15 min)
base: install
	$(BIN)/fusar-gpt demo --rebuild-base

lint: install
	$(BIN)/ruff check fusar_gpt tests benchmarks

bench: install
	$(BIN)/python benchmarks/tlm_overhead.py
	$(BIN)/python benchmarks/aef_sampling.py
	$(BIN)/python benchmarks/build_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
