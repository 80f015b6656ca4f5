"""A user's library end to end: every common format, tags, embedded/LRC/sidecar lyrics, the
files real folders also hold; explained by folder with the genre from the tags, and the
planted evidence found as on the demo's WAV files (issue: real libraries)."""

from __future__ import annotations

import json
from collections import defaultdict

import duckdb
import pyarrow.parquet as pq
import pytest

from musiclime.quality import planted_by_track
from pipeline.config import ExplainConfig
from pipeline.driver import run_explain
from tests.real_library import build_library

N_TRACKS = 6


def scan(out, table):
    return f"read_parquet('{out}/{table}/**/*.parquet', hive_partitioning=true, union_by_name=true)"


@pytest.fixture(scope="module")
def library(tmp_path_factory, demo_library):
    import soundfile as sf

    rows = [r for r in pq.read_table(demo_library / "catalogue.parquet").to_pylist() if r["split"] == "test"]
    rows = rows[:N_TRACKS]
    root = tmp_path_factory.mktemp("real") / "Music"
    expect = build_library(root, demo_library, rows, 16000)
    for r in rows:  # the same tracks as the demo has them, the reference
        x, sr = sf.read(demo_library / r["audio_path"], dtype="float32")
        (root / "Reference").mkdir(exist_ok=True)
        sf.write(root / "Reference" / f"{r['track_id']}.wav", x, sr)
        (root / "Reference" / f"{r['track_id']}.txt").write_text(r["lyrics"], encoding="utf-8")
        expect[f"Reference/{r['track_id']}"] = {"demo": r["track_id"], "kind": "reference"}
    return root, expect, rows


def top_hits(weights: list[tuple[str, str, float]], planted, k: int = 5) -> tuple[int, int]:
    """Planted features among the top k by support (weight, most for the label first)."""
    ranked = sorted(weights, key=lambda t: -t[2])
    kk = min(k, len(planted.audio) + len(planted.words))
    return sum(planted.contains(m, f, 10) for m, f, _ in ranked[:kk]), kk


def test_a_real_library_is_explained_once_per_file_with_its_tags(
    ray_session, library, genre_model_dir, tmp_path, demo_library
):
    root, expect, rows = library
    out = tmp_path / "out"
    cfg = ExplainConfig(
        catalogue=str(root),
        model=str(genre_model_dir),
        out=str(out),
        run_id="lib",
        seed=0,
        num_samples=300,
        design="orthogonal-grid",
        label_column="genre",
        labels="all",
        address="local",
        commit_every=16,
    )
    s = run_explain(cfg, show_progress=False)
    assert s.exit_code == 3, s.message  # the bad files are error rows
    con = duckdb.connect()
    errors = dict(con.execute(f"select track_id, error_type from {scan(out, 'errors')}").fetchall())
    want_errors = {t: e["error"] for t, e in expect.items() if "error" in e}
    assert errors == want_errors
    tracks = {
        r[0]: r
        for r in con.execute(
            f"select track_id, true_label, title, artist, album, lyrics_source, decoder, flags from {scan(out, 'tracks')}"
        ).fetchall()
    }
    assert set(tracks) == set(expect) - set(want_errors)  # every audio file once, nothing else
    assert len(con.execute(f"select track_id from {scan(out, 'tracks')}").fetchall()) == len(tracks)
    genre = {r["track_id"]: r["genre"] for r in rows}
    for tid, e in expect.items():
        if "lyrics" in e:
            assert tracks[tid][5] == e["lyrics"], (tid, tracks[tid])
        if e.get("kind") not in (None, "reference") and tid.startswith("Artist"):
            assert tracks[tid][1] == genre[e["demo"]] and tracks[tid][2].startswith("Song"), tracks[tid]
    assert "truncated" in tracks["Extras/Broken"][7]
    assert {tracks[t][6] for t in ("Extras/Twice.flac", "Extras/Twice.mp3")} == {"ffmpeg:flac", "ffmpeg:mp3float"}
    doc = json.loads((out / "run.json").read_text())
    assert doc["skipped_files"] == {
        ".cue": 1,
        ".jpg": 1,
        "appledouble": 1,
        "hidden": 1,
        "link to a folder already listed": 1,
    }
    assert doc["decoder"].startswith("pyav ") and s.skipped_files == doc["skipped_files"]
    # the planted evidence, as on the demo's own WAV files (AAC at 128 kbps keeps it)
    planted = planted_by_track(pq.read_table(demo_library / "ground_truth.parquet").to_pylist(), "genre")
    weights = defaultdict(list)  # of each track's demo genre (every label is explained)
    label = {t: genre[e["demo"]] for t, e in expect.items() if e.get("demo")}
    for tid, lab, modality, feature, w in con.execute(
        f"select track_id, label, modality, feature, weight from {scan(out, 'explanations')}"
    ).fetchall():
        if label.get(tid) == lab:
            weights[tid].append((modality, feature, w))
    hits = defaultdict(lambda: [0, 0])
    for tid, e in expect.items():
        if e.get("demo") in planted and tid in weights and tid.startswith(("Artist", "Reference")):
            h, k = top_hits(weights[tid], planted[e["demo"]])
            group = "reference" if e["kind"] == "reference" else "library"
            hits[group][0] += h
            hits[group][1] += k
    ref, lib = (hits[g][0] / hits[g][1] for g in ("reference", "library"))
    assert ref >= 0.6 and lib >= ref - 0.1, (ref, lib)
