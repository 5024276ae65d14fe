# Two entry points do all the set-up on a fresh machine:
#   make demo   - create .venv, install rlm-graph (runtime dependencies only), run the
#                 offline demo (no key needed)
#   make test   - add the dev tools, lint, type-check, test (with a throwaway PostgreSQL
#                 of this clone's own, stopped when the tests end)
# pyeryx ships cp312-abi3 wheels only, so the venv needs Python >= 3.12.

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.dev-installed
export LANGSMITH_TRACING ?= false
export LANGSMITH_TEST_TRACKING ?= false
export LANGGRAPH_CLI_NO_ANALYTICS ?= 1
export LANGGRAPH_NO_VERSION_CHECK ?= true

.PHONY: demo test lint bench clean

$(PY):
	@py=""; for c in python3 python3.12 python3.13; do \
	  if command -v $$c >/dev/null && $$c -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then py=$$c; break; fi; \
	done; \
	if [ -z "$$py" ]; then echo "error: Python >= 3.12 is needed (pyeryx ships cp312-abi3 wheels only)" >&2; exit 1; fi; \
	$$py -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The demo needs only the runtime dependencies; the dev tools (123 packages, ~2 min
# here) are installed by the first `make test`.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	@touch $(STAMP)

$(DEV_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP) $(DEV_STAMP)

demo: $(STAMP)
	$(VENV)/bin/rlm demo

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check rlm_graph graphs deploy tests bench
	$(VENV)/bin/ruff format --check rlm_graph graphs deploy tests bench
	$(VENV)/bin/mypy

# The PostgreSQL tests need a server: .ci/postgres.sh runs pytest beside a throwaway one
# of this clone's own (a Unix socket, no port; Debian's postgresql installed if needed)
# and stops it afterwards; RLM_TEST_POSTGRES_URL set beforehand uses yours instead.
# Without a server they skip.
test: lint
	.ci/postgres.sh run $(VENV)/bin/pytest -q

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) -m bench all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
