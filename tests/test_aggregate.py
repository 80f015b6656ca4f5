"""Global importances and the report, on a real explain run of planted tracks."""
import math
import os
import shutil
import subprocess
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from musiclime.aggregate import default_min_word_tracks
from pipeline.config import ExplainConfig
from pipeline.driver import run_explain
from pipeline.global_importance import aggregate, write_global_importance
from pipeline.report import build_report

SR = 16000
WORDS = "quiet harbour evening lantern paper window garden morning".split()


def planted_catalogue(root: Path, n: int = 12):
    """Loud bass in one segment (varies) and the word 'storm' in 2 of 3 tracks."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        stems = rng.normal(0, 0.05, size=(4, SR * 2)).astype(np.float32)
        k = int(rng.integers(0, 10))
        seg = SR * 2 // 10
        stems[2] *= 0.1
        stems[2, k * seg:(k + 1) * seg] = rng.normal(0, 0.5, seg)
        row = dict(track_id=f"t{i}", lyrics=" ".join(list(rng.choice(WORDS, 8)) + (["storm"] if i % 3 else [])),
                   genre="stormy" if i % 2 else "still")
        for name, x in zip(("vocals", "drums", "bass", "other"), stems):
            sf.write(root / f"t{i}.{name}.wav", x, SR)
            row[f"{name}_path"] = f"t{i}.{name}.wav"
        sf.write(root / f"t{i}.wav", stems.sum(0), SR)
        row["audio_path"] = f"t{i}.wav"
        rows.append(row)
    pq.write_table(pa.Table.from_pylist(rows), root / "catalogue.parquet")
    return root / "catalogue.parquet"


@pytest.fixture(scope="module")
def explained(ray_session, plugin_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("agg")
    cat = planted_catalogue(root)
    out = root / "out"
    for run_id, modality in (("both", "both"), ("audio", "audio")):
        s = run_explain(ExplainConfig(catalogue=str(cat), model="mlplugins:make", out=str(out), separator="provided",
                                      num_samples=300, run_id=run_id, modality=modality, labels="all",
                                      label_column="genre"), show_progress=False)
        assert s.exit_code == 0
    return out


def test_levels_and_planted_evidence(explained):
    g = aggregate(explained, runs=["both", "audio"])
    assert set(g["level"]) == {"stem", "segment", "stem_segment", "word", "modality"}
    assert set(g["run_id"]) == {"both", "audio"}  # runs side by side
    stormy = g.filter((pl.col("run_id") == "both") & (pl.col("label") == "stormy") & (pl.col("label_source") == "predicted"))
    top_stem = stormy.filter(pl.col("level") == "stem").sort("mean_abs_weight", descending=True)["stem"][0]
    top_word = stormy.filter(pl.col("level") == "word").sort("mean_abs_weight", descending=True)["token"][0]
    assert (top_stem, top_word) == ("bass", "storm")
    # modality shares add up, quartiles are ordered
    sh = stormy.filter(pl.col("level") == "modality").sort("modality")
    assert sh["share_mean"].sum() == pytest.approx(1.0)
    for r in sh.iter_rows(named=True):
        assert r["share_q25"] <= r["share_q50"] <= r["share_q75"]
    audio_run = g.filter((pl.col("run_id") == "audio") & (pl.col("level") == "modality") & (pl.col("modality") == "audio"))
    assert audio_run["share_mean"].to_list() == pytest.approx([1.0] * audio_run.height)
    # 'true' labels are aggregated too
    assert "true" in set(g["label_source"])


def test_word_threshold(explained):
    g = aggregate(explained, runs=["both"])
    words = g.filter(pl.col("level") == "word")
    assert words["n_tracks"].min() >= 3 == default_min_word_tracks(12)
    assert default_min_word_tracks(1000) == 10 and default_min_word_tracks(1001) == math.ceil(10.01)
    loose = aggregate(explained, runs=["both"], min_word_tracks=1).filter(pl.col("level") == "word")
    assert loose.height >= words.height


def test_duckdb_equals_polars(explained):
    g = aggregate(explained, runs=["both", "audio"])
    write_global_importance(explained, g)
    scan = f"read_parquet('{explained}/global_importance/**/*.parquet', hive_partitioning=true)"
    con = duckdb.connect()
    got = con.execute(f"""select stem, mean_abs_weight from {scan}
                          where run_id='both' and label='stormy' and label_source='predicted' and level='stem'
                          order by mean_abs_weight desc""").fetchall()
    want = (g.filter((pl.col("run_id") == "both") & (pl.col("label") == "stormy") & (pl.col("label_source") == "predicted")
                     & (pl.col("level") == "stem")).sort("mean_abs_weight", descending=True)
            .select("stem", "mean_abs_weight").rows())
    assert [s for s, _ in got] == [s for s, _ in want]
    np.testing.assert_allclose([w for _, w in got], [w for _, w in want], rtol=1e-12)
    # the stem level recomputed straight from the explanations in SQL
    e = f"read_parquet('{explained}/explanations/**/*.parquet', hive_partitioning=true)"
    t = f"read_parquet('{explained}/tracks/**/*.parquet', hive_partitioning=true)"
    sql = con.execute(f"""
        with x as (select e.track_id, e.stem, sum(abs(e.weight)) aw from {e} e join {t} t
                   on e.run_id=t.run_id and e.track_id=t.track_id and e.label=t.predicted
                   where e.run_id='both' and e.label='stormy' and e.modality='audio' group by 1, 2)
        select stem, sum(aw) / (select count(distinct track_id) from x) from x group by 1 order by 2 desc""").fetchall()
    np.testing.assert_allclose([w for _, w in sql], [w for _, w in want], rtol=1e-9)
    # re-aggregating replaces, never duplicates
    write_global_importance(explained, g)
    assert con.execute(f"select count(*) from {scan}").fetchone()[0] == g.height


def test_report_renders_in_a_real_browser(explained, tmp_path):
    path = build_report(explained, tracks_per_class=2)
    text = path.read_text()
    assert text.count("<img") + text.count('<svg class="heatmap"') >= 5 and "<audio" in text and "storm" in text
    assert "http://" not in text and "https://" not in text  # self-contained, offline
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed here (.ci/run installs it in CI)")
    shot = tmp_path / "report.png"
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run(flags + ["--virtual-time-budget=5000", "--dump-dom", path.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert "musiclime report" in dom.stdout, dom.stderr[-2000:]
    assert 'data-error="' not in dom.stdout  # the page's error trap marks <body> on any script error
    assert "<title>ERROR" not in dom.stdout
    console_errors = [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln and ("Error" in ln or "Uncaught" in ln)]
    assert console_errors == []
    subprocess.run(flags + ["--window-size=1280,2400", f"--screenshot={shot}", path.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20000
    if os.environ.get("MUSICLIME_SCREENSHOT"):  # keep it to look at
        shutil.copy(shot, os.environ["MUSICLIME_SCREENSHOT"])


def test_delta_aggregate_replaces_the_rows_of_its_runs(explained, tmp_path):
    """Aggregating again (all runs, then one) replaces those runs' rows: never duplicates."""
    import deltalake
    out = tmp_path / "copy"
    shutil.copytree(explained, out)
    g = aggregate(out, runs=["both", "audio"])
    for _ in range(2):
        write_global_importance(out, g, fmt="delta")
    write_global_importance(out, aggregate(out, runs=["audio"]), fmt="delta")
    dt = deltalake.DeltaTable(str(out / "global_importance_delta"))
    table = pl.from_arrow(dt.to_pyarrow_table())
    assert table.height == g.height
    assert set(table["run_id"]) == {"both", "audio"}
    key = [c for c in table.columns if c not in ("mean_abs_weight", "mean_weight", "mean_weight_se", "n_tracks", "topk_frequency")]
    assert table.select(key).is_duplicated().sum() == 0
    assert pl.read_delta(str(out / "global_importance_delta")).height == g.height


def test_a_standing_output_reads_across_releases_that_add_columns(explained, tmp_path):
    """A later release adds columns (on explanations and tracks), an earlier one lacked some
    this release has (weight_se, topk_resolved): aggregate, report, Polars (through
    pipeline.output) and DuckDB (union_by_name) read the mixed output; the older run's
    global mean_weight_se is null (its weights had none), this release's is not."""
    from pipeline.output import frame
    out = tmp_path / "copy"
    shutil.copytree(explained, out)
    for run, table, change in (("later", "explanations", lambda t: t.append_column(
                                    "weight_p", pa.array([0.01] * t.num_rows, pa.float64()))),
                               ("later", "tracks", lambda t: t.append_column(
                                    "new_metric", pa.array([1.5] * t.num_rows, pa.float64()))),
                               ("older", "explanations", lambda t: t.drop_columns(["weight_se"])),
                               ("older", "tracks", lambda t: t.drop_columns(["topk_resolved"]))):
        src = sorted((out / table / "run_id=both").rglob("*.parquet"))[0]
        dst = out / table / f"run_id={run}" / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(change(pq.read_table(src)), dst)
    tracks = frame(out, "tracks")
    n = {r: tracks.filter(pl.col("run_id") == r).height for r in ("both", "later", "older")}
    assert n["later"] == n["older"] > 0 and "new_metric" not in tracks.columns
    assert tracks.filter(pl.col("run_id") == "older")["topk_resolved"].null_count() == n["older"]
    assert frame(out, "explanations").filter(pl.col("run_id") == "later").height > 0
    g = aggregate(out, runs=["both", "audio", "later", "older"])
    assert {"both", "audio", "later", "older"} <= set(g["run_id"])
    feats = g.filter(pl.col("level") != "modality")
    assert feats.filter(pl.col("run_id") == "older")["mean_weight_se"].null_count() == \
        feats.filter(pl.col("run_id") == "older").height
    assert (feats.filter(pl.col("run_id") == "both")["mean_weight_se"] > 0).all()
    write_global_importance(out, g)
    assert build_report(out, run_id="later").is_file()
    con = duckdb.connect()
    se = con.execute(f"select count(weight_se), count(*) from read_parquet('{out}/explanations/**/*.parquet', "
                     f"hive_partitioning=true, union_by_name=true)").fetchone()
    assert 0 < se[0] < se[1]


def test_every_output_column_has_a_type_spark_and_iceberg_read(explained, tmp_path):
    """Every table, read back with pyarrow, Polars, DuckDB and deltalake, has only the types
    of schemas.warehouse (no unsigned ints: tracks.seed is int64)."""
    import deltalake
    import pyarrow.dataset as pds

    from schemas import warehouse
    from schemas.aggregates import GLOBAL_IMPORTANCE
    from schemas.tables import ALL
    from tests.catalogues import bad_input_catalogue
    out = tmp_path / "copy"
    shutil.copytree(explained, out)
    cat, errors, _ = bad_input_catalogue(tmp_path / "bad")  # so that errors/ has rows
    s = run_explain(ExplainConfig(catalogue=str(cat), model="mlplugins:make", out=str(out), separator="provided",
                                  num_samples=60, run_id="bad"), show_progress=False)
    assert s.exit_code == 3 and s.failed >= len(errors)
    write_global_importance(out, aggregate(out, runs=["both", "audio"]), fmt="delta")
    problems = [p for name, sch in {**ALL, "global_importance": GLOBAL_IMPORTANCE}.items()
                for f in sch for p in warehouse.arrow_problems(f.type, f"{name}.{f.name}")]
    for name in ("tracks", "explanations", "errors", "members", "global_importance"):
        files = f"{out}/{name}/**/*.parquet"
        d = pds.dataset(str(out / name), format="parquet", partitioning="hive")
        assert d.count_rows() > 0, name
        problems += [p for f in d.schema for p in warehouse.arrow_problems(f.type, f"arrow {name}.{f.name}")]
        schema = pl.scan_parquet(files, hive_partitioning=True).collect_schema()
        problems += [p for c, t in schema.items() for p in warehouse.polars_problems(t, f"polars {name}.{c}")]
        cols = duckdb.connect().execute(f"describe select * from read_parquet('{files}', hive_partitioning=true)")
        problems += [p for c, t, *_ in cols.fetchall() for p in warehouse.duckdb_problems(t, f"duckdb {name}.{c}")]
        deltalake.write_deltalake(str(tmp_path / "delta" / name), d.to_table())  # as a warehouse would load it
        fields = deltalake.DeltaTable(str(tmp_path / "delta" / name)).schema().fields
        problems += [p for f in fields for p in warehouse.delta_problems(f.type, f"delta {name}.{f.name}")]
    fields = deltalake.DeltaTable(str(out / "global_importance_delta")).schema().fields
    problems += [p for f in fields for p in warehouse.delta_problems(f.type, f"delta global_importance.{f.name}")]
    assert problems == []
    # the checks do catch what warehouses reject
    assert warehouse.arrow_problems(pa.list_(pa.uint64()), "x") and warehouse.polars_problems(pl.UInt64, "x")
    assert warehouse.duckdb_problems("STRUCT(a UBIGINT, b DOUBLE)", "x") == ["x.a: UBIGINT"]
    assert warehouse.arrow_problems(pa.timestamp("ns", "UTC"), "x") and warehouse.arrow_problems(pa.int8(), "x")


def test_batches_without_their_tracks_twin_aggregate_the_same(explained, tmp_path):
    """Tracks rewritten into one file (as another tool might): each explanations batch
    then looks its tracks up, and the aggregate is unchanged."""
    out = tmp_path / "merged"
    shutil.copytree(explained, out)
    for run_dir in (out / "tracks").glob("run_id=*"):
        files = sorted(run_dir.glob("*.parquet"))
        merged = pa.concat_tables([pq.read_table(f) for f in files])
        for f in files:
            f.unlink()
        pq.write_table(merged, run_dir / "all.parquet")
    keys = ["run_id", "label_source", "label", "level", "modality", "stem", "segment", "token"]
    want = aggregate(explained, runs=["both", "audio"]).sort(keys, nulls_last=True)
    got = aggregate(out, runs=["both", "audio"]).sort(keys, nulls_last=True)
    assert got.height == want.height
    np.testing.assert_allclose(got["mean_abs_weight"].to_numpy(), want["mean_abs_weight"].to_numpy(), rtol=1e-9)
    with pytest.raises(FileNotFoundError, match="no explanations"):
        aggregate(out, runs=["no-such-run"])
