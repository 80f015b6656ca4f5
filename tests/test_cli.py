import subprocess
import sys
import time
from pathlib import Path

MUSICLIME = str(Path(sys.executable).parent / "musiclime")


def test_help_is_fast_and_imports_nothing_heavy():
    t0 = time.perf_counter()
    r = subprocess.run([MUSICLIME, "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "demo" in r.stdout
    assert time.perf_counter() - t0 < 2.0
    probe = ("import sys; from pipeline.cli import build_parser; build_parser(); "
             "print(sorted(m for m in ('torch', 'ray', 'transformers', 'polars', 'demucs') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_command_is_a_usage_error():
    assert subprocess.run([MUSICLIME], capture_output=True).returncode == 2
    assert subprocess.run([MUSICLIME, "nonsense"], capture_output=True).returncode == 2
