# Every target that runs Python creates .venv first when it is missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test lint typecheck unit compiled test-compiled bench bench-ir bench-smoke clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/shadowproxy demo

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check shadowproxy tests bench setup.py
	$(BIN)/ruff format --check shadowproxy tests bench setup.py

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q

# The compiled build (setup.py) in a copy of the tree, never in place: a stale .so beside an
# edited .py would shadow it. Recompiled (about a minute) only when a package file changed;
# tests, bench and config are copied fresh every time.
COMPILED := build/compiled
COPY     := tar -cf - --exclude=./.venv --exclude=./build --exclude=./.git --exclude='__pycache__' \
	--exclude=./.mypy_cache --exclude=./.pytest_cache --exclude=./.ruff_cache
PACKAGE  := $(shell find shadowproxy -type f -not -path '*/__pycache__/*') setup.py pyproject.toml

$(COMPILED)/.built: $(STAMP) $(PACKAGE)
	rm -rf $(COMPILED) && mkdir -p $(COMPILED)
	$(COPY) . | tar -xf - -C $(COMPILED)
	cd $(COMPILED) && SHADOWPROXY_COMPILE=1 $(CURDIR)/$(BIN)/python setup.py -q build_ext --inplace
	touch $@

compiled: $(COMPILED)/.built
	$(COPY) --exclude=./shadowproxy . | tar -xf - -C $(COMPILED)

test-compiled: compiled
	cd $(COMPILED) && SHADOWPROXY_EXPECT_COMPILED=1 $(CURDIR)/$(BIN)/python -m pytest -q -p no:cacheprovider

bench: compiled
	$(BIN)/python -m bench.run --tree $(COMPILED)

bench-ir: compiled
	$(BIN)/python -m bench.instructions --tree $(COMPILED)

bench-smoke: $(STAMP)
	$(BIN)/python -m bench.run --smoke
	$(BIN)/python -m bench.instructions --smoke

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build *.egg-info
