# Two entry points do all the set-up on a fresh machine:
#   make demo   - create .venv, install rlm-graph, run the offline demo (no key needed)
#   make test   - create .venv, install rlm-graph with dev tools, lint, type-check, test
#                 (starting a throwaway PostgreSQL on loopback for the durability tests)
# pyeryx ships cp312-abi3 wheels only, so the venv needs Python >= 3.12.

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export LANGSMITH_TRACING ?= false
export LANGSMITH_TEST_TRACKING ?= false
export LANGGRAPH_CLI_NO_ANALYTICS ?= 1
export LANGGRAPH_NO_VERSION_CHECK ?= true

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	@py=""; for c in python3 python3.12 python3.13; do \
	  if command -v $$c >/dev/null && $$c -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then py=$$c; break; fi; \
	done; \
	if [ -z "$$py" ]; then echo "error: Python >= 3.12 is needed (pyeryx ships cp312-abi3 wheels only)" >&2; exit 1; fi; \
	[ -x $(PY) ] || $$py -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/rlm demo

lint: $(STAMP)
	$(VENV)/bin/ruff check rlm_graph graphs tests bench
	$(VENV)/bin/mypy

# The PostgreSQL tests need a server: .ci/postgres.sh starts a throwaway one on
# loopback (installing Debian's postgresql if needed); without one they skip.
test: lint
	RLM_TEST_POSTGRES_URL="$${RLM_TEST_POSTGRES_URL:-$$(.ci/postgres.sh || true)}" $(VENV)/bin/pytest -q

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) -m bench all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
