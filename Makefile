# vitzoo: two commands set everything up.
#   make demo   creates .venv, installs vitzoo and runs the catalog on the embedded index
#   make test   creates/updates .venv with the test extras and runs the whole suite
# Both install exactly the versions in $(LOCK), the set the test suite ran on, then vitzoo itself
# without resolving again (--no-deps). `make lock` re-resolves the lock after pyproject.toml's
# dependencies change (keeping every pin that still fits).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements/test.lock
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench index lock kernels clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv

$(STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r $(LOCK)
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	$(BIN)/python -m compileall -q vitzoo
	touch $@

demo: $(STAMP)
	$(BIN)/vitzoo index info
	$(BIN)/vitzoo list --arch B/16 --aug medium1 --pretrained
	$(BIN)/vitzoo recommend
	$(BIN)/vitzoo show B/16

test: $(STAMP)
	$(BIN)/ruff check vitzoo tests benchmarks
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

lint: $(STAMP)
	$(BIN)/ruff check vitzoo tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/catalog.py

# Compile the oneDNN bf16 matrix-product kernel into VITZOO_HOME/kernels (needs g++ and the
# cpu-bf16 extra, which the test lock includes); otherwise vitzoo builds it on first use.
kernels: $(STAMP)
	$(BIN)/python -m vitzoo.kernels.build

# Rebuild the embedded catalog from the embedded sources only.
index: $(STAMP)
	$(BIN)/vitzoo index build --source embedded --out index

lock: | $(BIN)/python
	$(BIN)/uv pip compile --quiet pyproject.toml --extra test --universal --python-version 3.11 -o $(LOCK)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
