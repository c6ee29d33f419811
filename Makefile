# Every target that runs Python creates .venv first when it is missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench bench-ir bench-smoke clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/shadowproxy demo

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check shadowproxy tests bench
	$(BIN)/ruff format --check shadowproxy tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench.run

bench-ir: $(STAMP)
	$(BIN)/python -m bench.instructions

bench-smoke: $(STAMP)
	$(BIN)/python -m bench.run --smoke
	$(BIN)/python -m bench.instructions --smoke

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build *.egg-info
