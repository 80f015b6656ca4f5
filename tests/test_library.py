import json
import time

import numpy as np
import pyarrow.parquet as pq
import soundfile as sf

from musiclime.library import GENRES, STEMS, make_library, synthesize, track_specs


def test_small_library_is_fast_complete_and_consistent(tmp_path):
    t0 = time.perf_counter()
    cat = make_library(tmp_path, tracks=20, seed=3)
    assert time.perf_counter() - t0 < 20
    rows = pq.read_table(cat).to_pylist()
    assert len(rows) == 20 and len({r["track_id"] for r in rows}) == 20
    assert {r["genre"] for r in rows} == set(GENRES)
    r = rows[0]
    stems = [sf.read(tmp_path / r[f"{s}_path"], dtype="float32")[0] for s in STEMS]
    mix, sr = sf.read(tmp_path / r["audio_path"], dtype="float32")
    assert sr == 16000 and len(mix) == 160000
    np.testing.assert_allclose(np.sum(stems, axis=0), mix, atol=1e-4)  # the mix is the stems' sum
    assert (tmp_path / r["lyrics_path"]).read_text() == r["lyrics"]
    truth = pq.read_table(tmp_path / "ground_truth.parquet").to_pylist()
    for t in truth:
        row = next(x for x in rows if x["track_id"] == t["track_id"])
        assert t["label"] == row[t["task"]]
        if t["modality"] == "lyrics":
            assert t["token"] in row["lyrics"].split()
    # reused when complete, regenerated when the parameters change
    mtime = cat.stat().st_mtime_ns
    make_library(tmp_path, tracks=20, seed=3)
    assert cat.stat().st_mtime_ns == mtime
    assert json.loads((tmp_path / "library.json").read_text())["tracks"] == 20


def test_planted_fill_is_where_the_truth_says():
    spec = next(s for s in track_specs(30, 1) if s.genre_audio)
    stems = synthesize(spec, 16000, 10.0)
    seg = 16000
    energy = [float(np.mean(stems[1, k * seg:(k + 1) * seg] ** 2)) for k in range(10)]
    fills = set(spec.fill_segments)
    assert min(energy[k] for k in fills) > 0 and len(fills) == 2
    # the fill replaces the groove: its segments differ clearly from the others
    other = [energy[k] for k in range(10) if k not in fills]
    assert all(abs(energy[k] - np.median(other)) > 0.2 * np.median(other) for k in fills)


def test_deterministic():
    a, b = track_specs(10, 5), track_specs(10, 5)
    assert a == b
    np.testing.assert_array_equal(synthesize(a[0], 8000, 2.0), synthesize(b[0], 8000, 2.0))
