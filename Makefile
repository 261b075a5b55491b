# twinloop: `make demo` runs scenarios/smoke.yaml end to end; `make test` runs the suite.
# Both set everything up first: a virtual environment with pinned versions
# (constraints.txt) and Foundry's anvil from npm (package-lock.json).

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ANVIL  := node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil

.PHONY: setup demo test clean

setup: $(STAMP) $(ANVIL)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "twinloop needs Python >= 3.11 (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

$(ANVIL): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: setup
	$(BIN)/twinloop run scenarios/smoke.yaml

test: setup
	TWINLOOP_REQUIRE_ANVIL=1 $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) node_modules .twinloop .pytest_cache
