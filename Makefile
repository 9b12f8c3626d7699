# corral's developer entry points. Each target sets up .venv first (scripts/bootstrap),
# re-running the setup only when pyproject.toml or the script changes.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.bootstrapped
# the Debian packages the real-component tests use (promtool, systemd-nspawn)
TOOLS  := $(VENV)/.test-tools

.PHONY: run test soak lint bench clean

$(STAMP): pyproject.toml scripts/bootstrap
	./scripts/bootstrap
	@touch $@

run: $(STAMP)  ## the daemon in the foreground on the demo tree (or CONFIG=file); Ctrl-C stops it
	$(VENV)/bin/corral run $(CONFIG)

$(TOOLS): $(STAMP)
	./scripts/bootstrap --test
	@touch $@

test: $(TOOLS)  ## the whole suite, both backends, coverage >= 95% of corral/
	HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-ci} $(PY) -m pytest -p no:cacheprovider \
		--cov=corral --cov-report=term --cov-fail-under=95 $(PYTEST_ARGS)

soak: $(TOOLS)  ## the reliability suite bigger and longer (CORRAL_SOAK=10: storms, fuzzing, churn)
	CORRAL_SOAK=$${CORRAL_SOAK:-10} $(PY) -m pytest -p no:cacheprovider tests/reliability $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)  ## speed and memory against raw asyncio and trio, see bench/README.md
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .coverage .hypothesis .mypy_cache .ruff_cache
