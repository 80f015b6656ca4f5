# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.musiclime-installed

.PHONY: demo test venv bench bench-full clean

# Created if missing, reinstalled only when pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/musiclime demo

test: $(STAMP)
	$(PY) -m pytest tests
	@if [ -d ../shared/acceptance ]; then \
		PYTHONDONTWRITEBYTECODE=1 $(PY) -m pytest --rootdir . -c pyproject.toml -p no:cacheprovider ../shared/acceptance; \
	else \
		echo "no ../shared/acceptance beside this checkout: acceptance checks skipped"; \
	fi

bench: $(STAMP)
	$(PY) bench/bench_core.py

clean:
	rm -rf demo_out .pytest_cache
