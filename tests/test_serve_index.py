"""The serve index against the tables themselves: every search a user can make, on a
synthetic output of three nights, answers what Polars computes from ``tracks`` and
``errors`` directly (rows, order, counts); the index is rebuilt when a table changes and
reused when nothing did."""
from __future__ import annotations

import random

import polars as pl
import pytest

from bench.serve_synth import ADJ, CLASSES, track_id, write_synthetic
from pipeline import output
from pipeline.serve.index import BadQuery, Query
from pipeline.serve.search import open_index


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic(root / "out", 1500, n_nights=3, changed=0.1, failed=0.01)
    return root


def reference(out: str, q: Query) -> list[tuple[str, str, float]]:
    """(run, track, probability) of every matching row, in the index's order, from the tables."""
    runs = [d["run_id"] for d in output.runs(out)]
    t = output.frame(out, "tracks", ["track_id", "title", "artist", "album", "predicted", "true_label",
                                     "explained_labels", "probabilities", "model_id", "topk_resolved"])
    t = t.with_columns(pl.col("explained_labels").list.first().alias("label"),
                       pl.col("probabilities").list.max().cast(pl.Float32).alias("prob"),
                       pl.lit("ok").alias("kind"), pl.lit(None, pl.String).alias("error_type"))
    e = output.frame(out, "errors", ["track_id", "error_type"]).with_columns(pl.lit("error").alias("kind"))
    tags = t.sort("run_id").group_by("track_id").agg(pl.col(c).drop_nulls().last() for c in ("title", "artist", "album"))
    rows = pl.concat([t.drop("title", "artist", "album"), e], how="diagonal_relaxed").join(tags, on="track_id", how="left")
    rows = rows.with_columns(pl.col("run_id").replace_strict(runs, list(range(len(runs)))).alias("night"),
                             pl.col("prob").fill_null(-1.0))
    if q.text:
        hay = pl.concat_str([pl.col(c).fill_null("") for c in ("track_id", "title", "artist", "album")], separator="\x1f")
        rows = rows.filter(hay.str.to_lowercase().str.contains(q.text.lower(), literal=True))
    for col, value in (("label", q.label), ("true_label", q.true), ("run_id", q.run), ("error_type", q.error)):
        if value and not (col == "error_type" and value == "any"):
            rows = rows.filter(pl.col(col) == value)
    if q.error == "any":
        rows = rows.filter(pl.col("kind") == "error")
    if q.topk is not None:
        rows = rows.filter(pl.col("topk_resolved") == q.topk)
    if q.status != "all":
        rows = rows.filter(pl.col("kind") == q.status)
    if q.feature:  # among the top 3 of the row's primary label
        top = (output.frame(out, "explanations", ["track_id", "label", "feature", "rank"])
               .filter((pl.col("rank") <= 3) & (pl.col("feature").str.to_lowercase() == q.feature.lower())))
        rows = rows.join(top.select("run_id", "track_id", "label"), on=["run_id", "track_id", "label"], how="semi")
    keys = {"night": (["night", "prob"], [True, True]), "prob": (["prob"], [True])}[q.sort]
    rows = rows.sort(*keys[0], descending=keys[1], maintain_order=True)
    got = list(zip(rows["run_id"], rows["track_id"], rows["prob"].cast(pl.Float64).round(5)))
    return got[::-1] if q.order == "asc" else got


def test_every_search_answers_what_the_tables_say(synthetic, tmp_path):
    out = str(synthetic / "out")
    ix = open_index(out, tmp_path / "ix")
    rng = random.Random(0)
    for k in range(60):
        params = {"q": rng.choice(["", "", rng.choice(ADJ), track_id(rng.randrange(1500))[:9], "artist 1"]),
                  "label": rng.choice(["", "", *CLASSES]), "true": rng.choice(["", "", "", *CLASSES]),
                  "run": rng.choice(["", "", "night-1", "night-3"]), "topk": rng.choice(["", "", "yes", "no"]),
                  "error": rng.choice(["", "", "", "", "any", "missing_file"]), "status": rng.choice(["all", "ok", "error"]),
                  "feature": rng.choice(["", "", "", "vocals@3", "Storm", "drums@0"]),
                  "sort": rng.choice(["night", "prob"]), "order": rng.choice(["desc", "asc"]), "per": "25",
                  "page": str(rng.choice([1, 1, 2]))}
        q = Query.parse(params)
        want = reference(out, q)
        rows, total = ix.search(q)
        assert total == len(want), (k, params)
        page = want[(q.page - 1) * q.per:q.page * q.per]
        got = [(r.run_id, r.track_id, round(r.prob if r.prob is not None else -1.0, 5)) for r in rows]
        # rows of equal probability (failed ones) may come in either order: the nights and
        # probabilities in order, the rows as a set
        assert [(g[0], g[2]) for g in got] == [(p[0], p[2]) for p in page], (k, params)
        if len({p[2] for p in page}) == len(page):
            assert got == page, (k, params)


def test_a_row_is_found_by_its_track_and_tells_where_its_files_are(synthetic, tmp_path):
    out = str(synthetic / "out")
    ix = open_index(out, tmp_path / "ix")
    tracks = output.frame(out, "tracks", ["track_id", "probabilities"])
    for tid in tracks["track_id"].unique().sort().head(40):
        rows = ix.rows_of(tid)
        want = tracks.filter(pl.col("track_id") == tid)
        assert sorted(ix.row(r).run_id for r in rows if ix.kind[r] == 0) == sorted(want["run_id"])
        for r in rows:
            if ix.kind[r] == 0:
                run, loc = ix.file_of(r)
                held = pl.from_arrow(output.read_file(loc, "tracks", ["track_id"]))["track_id"].to_list()
                assert run == ix.row(r).run_id and tid in held
                expl = pl.from_arrow(output.read_file(ix.explanations_file_of(r), "explanations", ["track_id"]))
                assert tid in set(expl["track_id"])
    assert ix.rows_of("no-such-track") == []


def test_the_index_is_rebuilt_when_a_table_changes_and_reused_otherwise(synthetic, tmp_path):
    import shutil
    out = synthetic / "copy"
    shutil.copytree(synthetic / "out", out)
    first = open_index(str(out), tmp_path / "ix")
    again = open_index(str(out), tmp_path / "ix")
    assert again.folder == first.folder
    stamp = (first.folder / "rows.parquet").stat().st_mtime_ns
    assert (again.folder / "rows.parquet").stat().st_mtime_ns == stamp  # not rebuilt
    # one more committed file in a night: a new index that holds its rows
    f = next((out / "errors" / "run_id=night-2").glob("*.parquet"))
    shutil.copy(f, f.with_name("part-later-000001.parquet"))
    later = open_index(str(out), tmp_path / "ix")
    assert later.folder != first.folder and later.n > first.n


def test_malformed_queries_say_what_is_wrong():
    for params, message in (({"page": "0"}, "page must lie in"), ({"per": "x"}, "per must be a whole number"),
                            ({"sort": "title"}, "sort must be one of"), ({"status": "gone"}, "status must be one of"),
                            ({"q": "x" * 201}, "longer than 200"), ({"topk": "1"}, "topk must be yes or no")):
        with pytest.raises(BadQuery, match=message):
            Query.parse(params)


def test_the_figures_show_weights_errors_and_sung_times_and_escape_everything():
    import numpy as np

    from pipeline import figures
    m = np.array([[0.2, -0.0011], [np.nan, 0.05]])
    svg = figures.heatmap(m, ["vocals", "<b>drums</b>"], "t <script>", np.array([[0.01, 0.0003], [np.nan, 0.002]]))
    assert svg.count('class="cell"') == 4 and "+0.200" in svg and "±0.0003" in svg and "-0.0011" in svg
    assert "<script>" not in svg and "&lt;b&gt;drums" in svg and "no feature" in svg
    assert 'fill="#ffffff"' in svg  # the missing feature is white, not a colour of the scale
    text = "storm <b>night</b> storm"
    html = figures.lyrics(text, {"storm": 0.4, "b": -0.1}, {"storm": [1.25, 7.5]})
    assert html.count('class="w w-p8"') == 2 and "sung at 1.2, 7.5 s" in html and "&lt;" in html
    assert "<b>" not in html
    bars = figures.bars(["a", "<i>"], [0.5, 0.25], "p", errors=[0.1, 0.0], links=["/?label=a", None])
    assert bars.count("<rect") == 2 and '<a href="/?label=a">' in bars and "&lt;i&gt;" in bars
