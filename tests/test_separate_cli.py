import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from musiclime.library import make_library

MUSICLIME = str(Path(sys.executable).parent / "musiclime")


def test_separate_catalogue_twice_and_on_ray(tmp_path):
    lib = tmp_path / "lib"
    rows = pq.read_table(make_library(lib, tracks=4, seed=1, seconds=3.0)).to_pylist()
    rows.append(dict(rows[0], track_id="ghost", audio_path="audio/nothing.flac"))
    cat = lib / "cat.parquet"
    pq.write_table(pa.Table.from_pylist(rows), cat)
    cache = tmp_path / "cache"
    first = subprocess.run([MUSICLIME, "separate", str(cat), "--out", str(cache)], capture_output=True, text=True)
    assert first.returncode == 3, first.stderr  # one row failed
    m = pq.read_table(cache / "separated.parquet").to_pylist()
    assert [r["status"] for r in m] == ["ok"] * 4 + ["error"]
    assert m[-1]["error_type"] == "missing_file" and "ghost" in first.stdout
    assert not any(r["cache_hit"] for r in m[:4])
    second = subprocess.run([MUSICLIME, "separate", str(cat), "--out", str(cache), "--address", "local"],
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 3, second.stderr
    m2 = pq.read_table(cache / "separated.parquet").to_pylist()
    assert all(r["cache_hit"] for r in m2[:4])  # zero separations the second time, on Ray too
    assert [r["cache_key"] for r in m2] == [r["cache_key"] for r in m]
