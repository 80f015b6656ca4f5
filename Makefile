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

# The reduced CPU set (under 15 minutes here), then the README tables.
bench: $(STAMP)
	$(PY) bench/bench_core.py
	$(PY) bench/bench_separation.py --tracks 20
	$(PY) bench/bench_lyrics_masks.py
	$(PY) bench/bench_pipeline_memory.py --sizes 50 200
	$(PY) bench/bench_aggregate_memory.py --rows 10000 100000
	$(PY) bench/update_readme.py

# The full set (long): all sizes, the models over seeds, global importances on the demo.
bench-full: $(STAMP)
	$(PY) bench/bench_core.py
	$(PY) bench/bench_separation.py --tracks 40
	$(PY) bench/bench_lyrics_masks.py
	$(PY) bench/bench_pipeline_memory.py --sizes 50 500
	$(PY) bench/bench_aggregate_memory.py --rows 10000 100000 1000000
	$(PY) bench/bench_models.py --tracks 400 --seeds 0 1
	$(PY) bench/update_readme.py

clean:
	rm -rf demo_out .pytest_cache
