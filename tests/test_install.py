"""The install is the lock file's, and a broken torch/torchaudio pair says so in one line."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SYMBOL = "undefined symbol: torch_exception_get_what_without_backtrace"


def lock_pins() -> dict[str, str]:
    text = (ROOT / "requirements.lock").read_text()
    return {m.group(1).lower(): m.group(2) for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", text, re.M)}


def test_lock_pins_everything_with_hashes_and_the_torch_pair():
    text = (ROOT / "requirements.lock").read_text()
    pins = lock_pins()
    assert pins["torch"] == pins["torchaudio"] == "2.11.0"
    # every requirement is exact and carries at least one hash
    blocks = [b for b in re.split(r"\n(?=[A-Za-z0-9])", text) if b.strip() and not b.startswith("#")]
    assert len(blocks) == len(pins) > 50
    assert all("==" in b.splitlines()[0] and "--hash=sha256:" in b for b in blocks)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"torch==2.11.0"' in pyproject and '"torchaudio==2.11.0"' in pyproject
    make = (ROOT / "Makefile").read_text()
    assert "--require-hashes --no-deps -r requirements.lock" in make


def test_this_environment_is_the_lock():
    wrong = {}
    for name, want in lock_pins().items():
        try:
            got = version(name)
        except PackageNotFoundError:
            got = None
        if got is None or got.split("+")[0] != want:
            wrong[name] = (want, got)
    assert wrong == {}


def fake_torchaudio(tmp_path: Path) -> dict:
    pkg = tmp_path / "fake" / "torchaudio"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"raise OSError('/venv/torchaudio/lib/libtorchaudio.so: {SYMBOL}')\n")
    return dict(os.environ, PYTHONPATH=str(pkg.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_broken_pair_is_one_clear_line(tmp_path):
    env = fake_torchaudio(tmp_path)
    r = subprocess.run([sys.executable, "-m", "musiclime.install_check"], env=env, capture_output=True, text=True)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "torchaudio" in lines[0] and "does not load against torch 2.11.0" in lines[0]
    assert SYMBOL in lines[0] and "requirements.lock" in lines[0]
    ok = subprocess.run([sys.executable, "-m", "musiclime.install_check"], capture_output=True, text=True)
    assert ok.returncode == 0 and "torchaudio 2.11.0" in ok.stdout


def test_broken_pair_stops_the_test_session_and_the_cli_with_that_line(tmp_path):
    env = fake_torchaudio(tmp_path)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_lease.py"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 4
    assert "broken install: torchaudio" in r.stdout + r.stderr
    assert " passed" not in r.stdout and " failed" not in r.stdout  # no test ran into it
    cli = subprocess.run([str(Path(sys.executable).parent / "musiclime"), "explain", "x.csv", "--out", str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=60)
    assert cli.returncode == 1 and "broken install: torchaudio" in cli.stderr


def test_our_polars_calls_raise_no_deprecation(tmp_path):
    """The selection joins of aggregate and report (pipeline.output), with the column types
    they meet, under warnings as errors."""
    import json
    import warnings

    import polars as pl

    from pipeline import output
    for run, ids in (("n1", ["a", "b"]), ("n2", ["b"])):
        part = tmp_path / "tracks" / f"run_id={run}"
        part.mkdir(parents=True)
        pl.DataFrame({"track_id": ids, "predicted": ["x"] * len(ids), "true_label": [None] * len(ids),
                      "score": [1.0] * len(ids), "content_key": ["k"] * len(ids),
                      "config_hash": ["h"] * len(ids)}).write_parquet(part / "part-0.parquet")
        members = tmp_path / "members" / f"run_id={run}"
        members.mkdir(parents=True)
        pl.DataFrame({"track_id": ["a", "b"], "catalogue_row": [0, 1], "content_key": ["k", "k"]}) \
            .write_parquet(members / "part-0.parquet")
        (tmp_path / "runs").mkdir(exist_ok=True)
        (tmp_path / "runs" / f"{run}.json").write_text(json.dumps({"run_id": run, "config_hash": "h",
                                                                   "started": f"2026-11-30T0{run[1]}"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        doc, sel = output.latest_selection(str(tmp_path))
    assert doc["run_id"] == "n2" and dict(sel.select("track_id", "run_id").iter_rows()) == {"a": "n1", "b": "n2"}


def test_a_deprecation_from_our_modules_fails_the_suite(tmp_path):
    test = tmp_path / "test_dep.py"
    test.write_text("import warnings\n\n"
                    "def test_ours():\n"
                    "    exec(\"import warnings; warnings.warn('old API', DeprecationWarning)\", {'__name__': 'pipeline.x'})\n\n"
                    "def test_theirs():\n"
                    "    exec(\"import warnings; warnings.warn('old API', DeprecationWarning)\", {'__name__': 'otherlib'})\n")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(ROOT / "pyproject.toml"),
                        "--rootdir", str(tmp_path), str(test)], capture_output=True, text=True, timeout=120)
    assert "1 failed, 1 passed" in r.stdout, r.stdout[-2000:]
    assert "DeprecationWarning: old API" in r.stdout
