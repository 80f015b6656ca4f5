"""Nightly incremental runs on a standing output: a grown and changed catalogue explains
exactly its new and changed rows, earlier failures only on request, removed tracks stay in
the history, and aggregate/report cover one night by default. Locally (Parquet) and on a
real S3 API server (Delta)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from musiclime import storage
from pipeline import output
from pipeline.catalogue import CHECKSUM, content_keys
from pipeline.config import ExplainConfig
from pipeline.driver import run_explain
from pipeline.global_importance import aggregate, write_global_importance

SR = 16000
WORDS = "night river lamp stone window bell".split()


def _track(root: Path, tid: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.1, SR * 2).astype(np.float32)
    sf.write(root / f"{tid}.wav", x, SR)
    return dict(track_id=tid, audio_path=f"{tid}.wav", lyrics=" ".join(rng.choice(WORDS, 6)))


def _write(root: Path, rows: list[dict]) -> str:
    pq.write_table(pa.Table.from_pylist(rows), root / "catalogue.parquet")
    return str(root / "catalogue.parquet")


def _night(cat: str, out: str, night: str, **kw):
    s = run_explain(ExplainConfig(catalogue=cat, model="mlplugins:make", out=out, separator="none", num_samples=60,
                                  run_id=night, incremental=True, **kw), show_progress=False)
    assert s.exit_code in (0, 3), s.message
    return s


def _ids(out: str, table: str, run: str) -> list[str]:
    return sorted(output.frame(out, table, ["track_id"], [run])["track_id"].to_list())


# On S3 with Delta tables; a local Parquet output's nights are run by the text-classifier test
# (tests/test_hf_models.py: new, changed and unchanged rows) and its history by the planner's.
@pytest.mark.parametrize("where", ["s3"])
def test_nights_explain_exactly_the_new_and_changed_rows(where, tmp_path, plugin_path, ray_session, s3):
    lib = tmp_path / "lib"
    lib.mkdir()
    out = str(tmp_path / "out") if where == "local" else "s3://lib/nights"
    rows = [_track(lib, f"t{i}", i) for i in range(7)]
    rows.append(dict(track_id="t7", audio_path="t7.wav", lyrics="gone"))  # its file is missing: an error row
    cat = _write(lib, rows)
    n1 = _night(cat, out, "n1")
    assert (n1.explained, n1.failed, n1.unchanged, n1.format) == (7, 1, 0, "parquet" if where == "local" else "delta")

    # night 2: two new tracks, t2's audio re-encoded, t5 removed, t7 still missing
    time.sleep(0.01)
    changed = _track(lib, "t2", 102)
    rows2 = [r for r in rows if r["track_id"] not in ("t2", "t5")] + [changed] + \
        [_track(lib, "t8", 8), _track(lib, "t9", 9)]
    cat = _write(lib, rows2)
    n2 = _night(cat, out, "n2")
    assert _ids(out, "tracks", "n2") == ["t2", "t8", "t9"] and n2.computed == 3
    assert _ids(out, "errors", "n2") == []              # t7 failed before: not retried by default
    assert n2.unchanged == 6 and (n2.explained, n2.failed) == (3, 0)
    assert "t5" in _ids(out, "tracks", "n1")            # removed tracks stay in the history

    # a rerun of the same night is a resume: nothing new
    again = _night(cat, out, "n2")
    assert again.computed == 0 and _ids(out, "tracks", "n2") == ["t2", "t8", "t9"]

    # night 3 with --retry-errors: only the earlier failure is tried again
    n3 = _night(cat, out, "n3", retry_errors=True)
    assert _ids(out, "tracks", "n3") == [] and _ids(out, "errors", "n3") == ["t7"] and n3.computed == 0

    # the default aggregate covers the latest night: the latest explanation of each track
    # of its catalogue (t5 removed, t7 never explained), under its model and config
    doc, sel = output.latest_selection(out)
    assert doc["run_id"] == "n3"
    got = dict(sel.select("track_id", "run_id").iter_rows())
    assert got == {"t0": "n1", "t1": "n1", "t2": "n2", "t3": "n1", "t4": "n1", "t6": "n1", "t8": "n2", "t9": "n2"}
    g = aggregate(out)
    write_global_importance(out, g)
    assert set(g["run_id"]) == {"n3"} and set(g["config_hash"]) == {doc["config_hash"]}
    assert set(g["model_id"]) == {doc["model_id"]}
    per_class = g.filter((pl.col("level") == "modality") & (pl.col("modality") == "audio")
                         & (pl.col("label_source") == "predicted"))
    assert per_class["n_tracks"].sum() == 8
    first = aggregate(out, night="n1")
    assert set(first["run_id"]) == {"n1"} and first.filter(
        (pl.col("level") == "modality") & (pl.col("modality") == "audio")
        & (pl.col("label_source") == "predicted"))["n_tracks"].sum() == 7
    from pipeline.report import build_report
    build_report(out, audio=False)
    html = storage.read_bytes(output.location(out, "report.html")).decode()
    assert "8 tracks explained" in html

    # another config on the same output starts its own history: everything is explained
    n4 = _night(cat, out, "n4", seed=1)
    assert (n4.computed, n4.failed, n4.unchanged) == (8, 1, 0)


def test_content_keys_follow_what_decides_unchanged(tmp_path):
    a = tmp_path / "a.wav"
    sf.write(a, np.zeros(SR, np.float32), SR)
    row = dict(track_id="x", audio_path=str(a), lyrics="one two")
    k0 = content_keys([dict(row)])[0]
    assert content_keys([dict(row)])[0] == k0 and len(k0) == 32
    assert content_keys([dict(row, lyrics="one three")])[0] != k0          # inline lyrics changed
    assert content_keys([dict(row, genre="rock")], "genre")[0] != k0         # the explained label changed
    os.utime(a, ns=(1, 1))
    assert content_keys([dict(row)])[0] != k0                                # the file was touched
    missing = content_keys([dict(row, audio_path=str(tmp_path / "nope.wav"))])[0]
    assert missing != k0
    with_sum = dict(row, **{CHECKSUM: "abc"})
    k1 = content_keys([with_sum])[0]
    os.utime(a, ns=(2, 2))
    assert content_keys([with_sum])[0] == k1                                 # a checksum column decides alone
    assert content_keys([dict(with_sum, **{CHECKSUM: "abd"})])[0] != k1
    # a text classifier's key follows the lyrics file and never the audio or stems
    lyr = tmp_path / "a.txt"
    lyr.write_text("one two")
    text = dict(row, lyrics=None, lyrics_path=str(lyr), vocals_path=str(tmp_path / "v.wav"))
    k2 = content_keys([text], audio_used=False)[0]
    os.utime(a, ns=(3, 3))
    sf.write(tmp_path / "v.wav", np.zeros(SR, np.float32), SR)              # a stem appears
    assert content_keys([text], audio_used=False)[0] == k2
    assert content_keys([dict(text, audio_path=str(tmp_path / "gone.wav"))], audio_used=False)[0] == k2
    assert content_keys([text])[0] != content_keys([dict(text, vocals_path=None)])[0]  # heard: it counts
    os.utime(lyr, ns=(4, 4))
    assert content_keys([text], audio_used=False)[0] != k2


def test_a_standing_delta_output_takes_columns_added_and_missing(tmp_path):
    """Releases change the tables under a standing Delta output: an older one wrote tracks
    without content_key, a newer one explanations with weight_p (a column this release does not know). This
    release still commits (the schema merges: new columns added, absent ones null), and
    aggregate and the readers take every run."""
    import deltalake
    from deltalake import write_deltalake

    from pipeline.delta_writer import DeltaRunWriter
    from tests.writer_harness import result
    from tests.writer_harness import run_rows as rows
    out = str(tmp_path / "standing")

    old_t, old_e = rows("old", ["a", "b"])
    # the release before the real-libraries one: no tag, decoder, window or sung-at columns,
    # nor the audio location and lyrics that musiclime serve reads
    later_cols = ["title", "artist", "album", "lyrics_source", "decoder", "windows", "window_start_s",
                  "audio_path", "audio_key", "lyrics"]
    write_deltalake(f"{out}/tracks", old_t.drop_columns(["content_key", *later_cols]), partition_by=["run_id"])
    write_deltalake(f"{out}/explanations", old_e.drop_columns(["sung_at_s"]), partition_by=["run_id"])
    later_t, later_e = rows("later", ["c"])
    write_deltalake(f"{out}/tracks", later_t, mode="append", partition_by=["run_id"], schema_mode="merge")
    write_deltalake(f"{out}/explanations", later_e.append_column("weight_p", pa.array([0.01] * later_e.num_rows)),
                    mode="append", partition_by=["run_id"], schema_mode="merge")
    w = DeltaRunWriter(out, "now", "inv")
    w.recover()
    for i, tid in enumerate(["d", "e"]):
        track, expl = result({"track_id": tid, "catalogue_row": i}, "inv")
        w.add_track(dict(track, content_key=f"{i:032x}"), expl)
    assert w.commit()
    expl = pl.read_delta(f"{out}/explanations")
    assert expl.filter(pl.col("run_id") == "now")["weight_p"].null_count() == 2 * 3
    names = deltalake.DeltaTable(f"{out}/tracks").schema().to_arrow().names
    assert "content_key" in names and set(later_cols) <= set(names)
    assert "sung_at_s" in deltalake.DeltaTable(f"{out}/explanations").schema().to_arrow().names
    tracks = output.frame(out, "tracks", None, None, "delta")
    assert sorted(tracks["track_id"]) == ["a", "b", "c", "d", "e"]
    assert tracks.filter(pl.col("run_id") == "old")["content_key"].null_count() == 2
    assert "weight_p" not in output.frame(out, "explanations", None, None, "delta").columns  # this release's schema
    g = aggregate(out, runs=["old", "later", "now"])
    assert set(g["run_id"]) == {"old", "later", "now"}
