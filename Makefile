# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.musiclime-installed

.PHONY: demo test lint venv lock bench bench-full clean

# Everything comes from requirements.lock: exact versions with hashes, no resolution here
# (pip alone would now pick torchaudio 2.11.1, which does not load against torch 2.11.0).
# Created if missing, reinstalled when the lock or pyproject.toml changes.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-cache-dir --require-hashes --no-deps -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m musiclime.install_check
	@touch $@

# Regenerate requirements.lock from pyproject.toml's ranges (Linux x86-64, Python 3.11), then
# append requirements-nodeps.in's packages without their dependencies.
UV_VERSION := 0.13.9
lock:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv==$(UV_VERSION)
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --extra build --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --generate-hashes --no-header -o requirements.lock
	$(VENV)/bin/uv pip compile requirements-nodeps.in --no-deps --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --generate-hashes --no-header >> requirements.lock

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/musiclime demo

# Seconds: the linter, the formatter and the type checker, at the lock's versions (config in
# pyproject.toml). The formatter covers FORMATTED, which grows as files are reworked: formatting
# the rest at once splits lines into 38 near-duplicate runs that want merging first.
FORMATTED := pipeline/engine pipeline/run_record.py pipeline/writer_base.py pipeline/lease_base.py \
	tests/test_policy.py tests/test_structure.py tests/test_docs.py \
	musiclime/av_decode.py musiclime/tags.py musiclime/synced.py musiclime/lyrics_sources.py \
	musiclime/whole_track.py pipeline/folder.py bench/bench_decode.py tests/real_library.py \
	tests/test_formats.py tests/test_library_folder.py tests/test_whole_track.py tests/test_real_library.py \
	musiclime/models/tf_checkpoint.py musiclime/models/musicnn.py musiclime/scores.py bench/bench_musicnn.py \
	bench/musicnn_reference.py tests/musicnn_clips.py tests/test_musicnn.py
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check $(FORMATTED)
	$(VENV)/bin/mypy

# Two xdist workers (TEST_WORKERS; three were slower: the Ray clusters then share two cores
# with more). tests/conftest.py sends the multi-node cluster tests to one worker as a group
# and the trained default model's tests first to the other (see its docstring).
TEST_WORKERS ?= 2
# The Azure Blob emulator the tests start (Azurite, exact versions and hashes in its npm lock).
AZURITE := tests/azurite/node_modules/.bin/azurite-blob
$(AZURITE): tests/azurite/package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --prefix tests/azurite --no-audit --no-fund --loglevel=error \
		&& touch $@; else echo "npm missing: the Azure Blob tests say they are skipped"; fi

test: lint $(AZURITE)
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder --durations=40
	@if [ -d ../shared/acceptance ]; then \
		PYTHONDONTWRITEBYTECODE=1 $(PY) -m pytest --rootdir . -c pyproject.toml -p no:cacheprovider ../shared/acceptance; \
	else \
		echo "no ../shared/acceptance beside this checkout: acceptance checks skipped"; \
	fi

# The reduced CPU set (under 15 minutes here), then the README tables.
# The reduced CPU set (< 15 min on 2 cores; builds the cached demo library and models first
# when missing). It rewrites bench/results/*.json and the README's tables.
bench: $(STAMP)
	$(PY) bench/bench_core.py
	$(PY) bench/bench_separation.py --tracks 20
	$(PY) bench/bench_lyrics_masks.py
	$(PY) bench/bench_scale.py --sizes 10 50 200 --workers 1 2
	$(PY) bench/bench_aggregate_memory.py --rows 10000 100000 1000000
	$(PY) bench/bench_catalogue_memory.py --rows 10000 100000 1000000
	$(PY) bench/bench_sampling.py --model genre --tracks 1 --seeds 2 --iid-max 1000 --grid-max 256
	$(PY) bench/quality.py --model genre --tracks 3 --seeds 3 --stability-samples 250 1000 --stability-tracks 2
	$(PY) bench/update_readme.py

# The full set (hours): all sizes, the models over seeds, both tasks, global importances on
# a fresh held-out demo library. bench/gpu.sh runs on a GPU machine (see README).
bench-full: $(STAMP)
	$(PY) bench/bench_core.py
	$(PY) bench/bench_separation.py --tracks 40
	$(PY) bench/bench_lyrics_masks.py
	$(PY) bench/bench_scale.py --sizes 10 200 2000 --workers 1 2
	$(PY) bench/bench_aggregate_memory.py --rows 10000 100000 1000000
	$(PY) bench/bench_catalogue_memory.py --rows 10000 100000 1000000
	$(PY) bench/bench_models.py --tracks 400 --seeds 0 1
	$(PY) bench/bench_sampling.py --tracks 3 --seeds 3
	$(PY) bench/quality.py --tracks 10 --seeds 5
	$(PY) bench/bench_global.py --fresh 100
	$(PY) bench/bench_chaos.py --tracks 600 --every 15
	$(PY) bench/update_readme.py

clean:
	rm -rf demo_out .pytest_cache
