# vitzoo: two commands set everything up.
#   make demo   creates .venv, installs vitzoo and runs the catalog on the embedded index
#   make test   creates/updates .venv with the test extras and runs the whole suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test

.PHONY: demo test lint bench index clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e .
	$(BIN)/python -m compileall -q vitzoo
	touch $@

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e ".[test]"
	$(BIN)/python -m compileall -q vitzoo
	touch $@ $(STAMP_RUN)

demo: $(STAMP_RUN)
	$(BIN)/vitzoo index info
	$(BIN)/vitzoo list --arch B/16 --aug medium1 --pretrained
	$(BIN)/vitzoo recommend
	$(BIN)/vitzoo show B/16

test: $(STAMP_TEST)
	$(BIN)/ruff check vitzoo tests benchmarks
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

lint: $(STAMP_TEST)
	$(BIN)/ruff check vitzoo tests benchmarks

bench: $(STAMP_TEST)
	$(BIN)/python benchmarks/catalog.py

# Rebuild the embedded catalog from the embedded sources only.
index: $(STAMP_RUN)
	$(BIN)/vitzoo index build --source embedded --out index

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
