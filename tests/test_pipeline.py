"""The explain job on a real local Ray: tables, exactly-once, resume, failures, determinism."""
import json
import os
import sys
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from musiclime.models import BagOfWordsEncoder, LateFusionClassifier, LogMelCNN, save_checkpoint
from musiclime.stages import track_seed
from pipeline.config import ExplainConfig
from pipeline.driver import run_explain
from tests.catalogues import bad_input_catalogue

MUSICLIME = str(Path(sys.executable).parent / "musiclime")


@pytest.fixture(scope="module")
def light_checkpoint(tmp_path_factory, demo_library):
    import torch
    torch.manual_seed(0)
    classes = ["electronic", "folk", "hiphop", "jazz", "rock"]
    m = LateFusionClassifier(LogMelCNN(16000, channels=(8, 16), emb_dim=16), BagOfWordsEncoder(512, 8), classes, 16000)
    return save_checkpoint(m, tmp_path_factory.mktemp("light") / "ckpt")


def scan(out, table):
    return f"read_parquet('{out}/{table}/**/*.parquet', hive_partitioning=true)"


def cfg(**kw):
    base = dict(num_samples=120, seed=0, commit_every=8, address="local")
    return ExplainConfig(**{**base, **kw})


def _weights_reproduce_from_the_stored_seed(out, tracks, expl, demo_library, checkpoint):
    """``tracks.seed`` is int64 (no unsigned types in warehouses): a negative stored seed,
    given to the explainer as read from the table, reproduces the track's weights."""
    import numpy as np

    from musiclime.explainer import MusicLIME
    from musiclime.gpu_stage import ExplainStage
    from musiclime.stages import decode, fit
    from pipeline.catalogue import read_catalogue
    assert tracks.schema["seed"] == pl.Int64 and pq.read_schema(next((out / "tracks").rglob("*.parquet"))).field(
        "seed").type == "int64"
    neg = tracks.filter(pl.col("seed") < 0).sort("catalogue_row").row(0, named=True)
    c = cfg(catalogue=str(demo_library / "catalogue.parquet"), model=str(checkpoint), out=str(out),
            separator="provided", labels="true", label_column="genre")
    stage = ExplainStage(c.model, c.explainer_spec(), c.modality, c.segments, "cpu", c.labels, c.label_column)
    inp = decode(read_catalogue(demo_library / "catalogue.parquet")[neg["catalogue_row"]], c.decode_spec(), 16000)
    inp.seed = neg["seed"]  # as read from the table
    again = fit(stage(inp), c.fit_spec(stage.model_id), "x").explanations.to_pydict()
    stored = expl.filter(pl.col("track_id") == neg["track_id"]).sort("label", "feature")
    mine = pl.DataFrame({k: again[k] for k in ("label", "feature", "weight")}).sort("label", "feature")
    assert np.array_equal(stored["weight"].to_numpy(), mine["weight"].to_numpy())
    # the stored value and its uint64 reading are the same seed
    a, b = MusicLIME(seed=neg["seed"]), MusicLIME(seed=neg["seed"] + 2 ** 64)
    assert a.seed == b.seed == neg["seed"] + 2 ** 64
    with pytest.raises(ValueError, match="64 bits"):
        MusicLIME(seed=2 ** 64)


def test_demo_tracks_end_to_end(ray_session, demo_library, light_checkpoint, tmp_path):
    out = tmp_path / "out"
    s = run_explain(cfg(catalogue=str(demo_library / "catalogue.parquet"), model=str(light_checkpoint), out=str(out),
                        separator="provided", limit=24, run_id="demo40", labels="true", label_column="genre"),
                    show_progress=False)
    assert s.exit_code == 0 and s.explained == 24 and s.failed == 0
    tracks = pl.scan_parquet(f"{out}/tracks/**/*.parquet", hive_partitioning=True).collect()
    assert tracks.height == 24 and tracks["track_id"].n_unique() == 24
    assert set(tracks["run_id"].unique()) == {"demo40"}
    expl = pl.read_parquet(f"{out}/explanations/**/*.parquet", hive_partitioning=True)
    assert expl.height == (tracks["n_audio_features"] + tracks["n_lyrics_features"]).sum()
    # the same numbers through DuckDB and pyarrow.dataset
    con = duckdb.connect()
    assert con.execute(f"select count(*) from {scan(out, 'tracks')}").fetchone()[0] == 24
    assert con.execute(f"select count(*) from {scan(out, 'explanations')}").fetchone()[0] == expl.height
    d = ds.dataset(str(out / "explanations"), format="parquet", partitioning="hive")
    assert d.count_rows() == expl.height and "run_id" in d.schema.names
    # the partition column is not repeated inside the files
    f = next((out / "tracks" / "run_id=demo40").glob("*.parquet"))
    assert "run_id" not in pq.read_schema(f).names
    # field docs travel in the files
    assert b"doc" in pq.read_schema(f).field("seed").metadata
    # seeds and labels as specified
    row = tracks.filter(pl.col("track_id") == "demo-00000").row(0, named=True)
    assert row["seed"] == track_seed(0, "demo-00000")
    _weights_reproduce_from_the_stored_seed(out, tracks, expl, demo_library, light_checkpoint)
    assert row["explained_labels"] == [row["true_label"]] and len(row["probabilities"]) == 5
    assert abs(sum(row["probabilities"]) - 1) < 1e-6
    ranks = expl.filter(pl.col("track_id") == "demo-00000").sort("rank")["rank"].to_list()
    assert ranks == list(range(1, len(ranks) + 1))
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["classes"] == ["electronic", "folk", "hiphop", "jazz", "rock"]
    assert manifest["status"] == "finished" and manifest["model_id"] and manifest["catalogue_hash"]
    # files are sized by the writer: 24 tracks, 8 per commit -> about 3 files (a slow commit
    # interval can add one), never one per track
    assert len(list((out / "tracks" / "run_id=demo40").glob("*.parquet"))) <= 24 // 8 + 2
    _demo_track_page_in_a_browser(out, tmp_path)


def _demo_track_page_in_a_browser(out, tmp_path):
    """What `make demo` ends with: `musiclime serve` on the output, a track page in chromium
    with its heatmap, lyrics and playable audio (the demo's provided stems, from its
    catalogue row); README's picture is taken here (MUSICLIME_UPDATE_SCREENSHOTS=1)."""
    import shutil

    from selenium.webdriver.common.by import By

    from bench.bench_serve import start_server
    from tests.browser import browser, playable
    proc, port, _ = start_server(str(out), str(tmp_path / "index"))
    try:
        with browser(tmp_path) as d:
            d.get(f"http://127.0.0.1:{port}/track/demo-00000")
            assert d.title.startswith("Track demo-00000")
            assert len(d.find_elements(By.CSS_SELECTOR, "#heatmap svg.heatmap g.cell")) == 40
            assert len(d.find_elements(By.CSS_SELECTOR, "#lyrics span.w")) >= 5
            assert playable(d, "original") > 5 and playable(d, "top") > 5
            d.save_screenshot(str(tmp_path / "serve-track.png"))
            if os.environ.get("MUSICLIME_UPDATE_SCREENSHOTS"):
                shutil.copy(tmp_path / "serve-track.png", Path(__file__).resolve().parents[1] / "docs" / "serve-track.png")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_bad_input_catalogue(ray_session, plugin_path, tmp_path):
    cat, want_errors, want_flags = bad_input_catalogue(tmp_path / "bad")
    out = tmp_path / "out"
    s = run_explain(cfg(catalogue=str(cat), model="mlplugins:make", out=str(out), run_id="bad", max_seconds=3.0),
                    show_progress=False)
    assert s.exit_code == 3
    con = duckdb.connect()
    errs = con.execute(f"select track_id, catalogue_row, error_type, stage, message from {scan(out, 'errors')}").fetchall()
    got = {}
    for tid, _row, et, _stage, msg in errs:
        key = f"{tid}#dup" if et == "duplicate_track_id" else tid
        got[key] = et
        assert msg and (tid in msg or et == "duplicate_track_id"), msg  # errors name the track
    assert got == want_errors
    tracks = dict(con.execute(f"select track_id, flags from {scan(out, 'tracks')}").fetchall())
    assert {t: sorted(f) for t, f in tracks.items()} == {t: sorted(f) for t, f in want_flags.items()}
    # every catalogue row exactly once, in one table or the other
    rows = con.execute(f"select catalogue_row from {scan(out, 'tracks')} union all "
                       f"select catalogue_row from {scan(out, 'errors')}").fetchall()
    assert sorted(r for (r,) in rows) == list(range(pq.read_metadata(cat).num_rows))
    # nothing was written outside the output directory
    assert not (tmp_path / "escape").exists() and not (tmp_path.parent / "escape").exists()
    assert all(p.resolve().is_relative_to(out.resolve()) for p in out.rglob("*"))
    # no-lyrics tracks are explained on audio alone
    mods = con.execute(f"select distinct modality from {scan(out, 'explanations')} where track_id='no-lyrics'").fetchall()
    assert mods == [("audio",)]


def _demo_cfg(demo_library, out, **kw):
    return cfg(catalogue=str(demo_library / "catalogue.parquet"), model="mlplugins:make", out=str(out),
               separator="provided", **kw)


def test_same_weights_whatever_the_number_of_actors(ray_session, plugin_path, demo_library, tmp_path):
    out = tmp_path / "out"
    a = run_explain(_demo_cfg(demo_library, out, limit=6, run_id="one", predictors=1), show_progress=False)
    b = run_explain(_demo_cfg(demo_library, out, limit=6, run_id="two", predictors=2, surrogate_workers=2,
                              tracks_in_flight=3), show_progress=False)
    assert a.exit_code == b.exit_code == 0
    q = (f"select track_id, label, feature, weight from {scan(out, 'explanations')} where run_id='{{}}' "
         f"order by track_id, label, feature")
    con = duckdb.connect()
    assert con.execute(q.format("one")).fetchall() == con.execute(q.format("two")).fetchall()


def test_rerun_same_run_id_skips_and_retry_errors_replaces(ray_session, plugin_path, tmp_path):
    cat, want_errors, _ = bad_input_catalogue(tmp_path / "bad")
    out = tmp_path / "out"
    c = cfg(catalogue=str(cat), model="mlplugins:make", out=str(out), run_id="r", max_seconds=3.0)
    first = run_explain(c, show_progress=False)
    again = run_explain(c, show_progress=False)
    assert again.computed == 0 and again.exit_code == first.exit_code == 3
    retried = run_explain(ExplainConfig(**{**c.to_json(), "retry_errors": True}), show_progress=False)
    assert retried.computed == 0  # the bad rows fail again at decode, before any model work
    con = duckdb.connect()
    n_err = con.execute(f"select count(*) from {scan(out, 'errors')}").fetchone()[0]
    assert n_err == len(want_errors)  # replaced, not duplicated
    invs = con.execute(f"select distinct invocation_id from {scan(out, 'errors')} where error_type != 'duplicate_track_id'").fetchall()
    assert len(invs) == 1 and invs[0][0] != con.execute(
        f"select distinct invocation_id from {scan(out, 'tracks')}").fetchall()[0][0]


def test_auto_num_samples_with_the_grid_design(ray_session, demo_library, light_checkpoint, tmp_path):
    out = tmp_path / "out"
    s = run_explain(cfg(catalogue=str(demo_library / "catalogue.parquet"), model=str(light_checkpoint), out=str(out),
                        separator="provided", limit=3, run_id="auto", num_samples="auto", design="grid",
                        labels="true", label_column="genre"), show_progress=False)
    assert s.exit_code == 0 and s.explained == 3
    tracks = pl.read_parquet(f"{out}/tracks/**/*.parquet", hive_partitioning=True)
    # every track stopped somewhere on the schedule, with whether its top-10 is resolved
    # recorded, and the grid spent far fewer encoder passes than it drew joint samples
    assert tracks["topk_resolved"].is_not_null().all() and set(tracks["design"]) == {"grid"}
    assert set(tracks["target"]) == {"log_odds"}        # auto's target outside the iid design
    assert (tracks["model_rows"] * 4 <= tracks["n_samples"]).all()
    expl = pl.read_parquet(f"{out}/explanations/**/*.parquet", hive_partitioning=True)
    assert expl.height == (tracks["n_audio_features"] + tracks["n_lyrics_features"]).sum()
    assert set(expl["label"]) <= set(tracks["true_label"])
    assert (expl["weight_se"] > 0).all()
