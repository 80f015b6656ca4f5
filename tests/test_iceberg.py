"""Iceberg outputs through pyiceberg's SQL catalog on SQLite, the warehouse on local disk and
on the S3 test server: exactly once under a SIGKILL at every commit step, schema evolution,
and explain -> aggregate -> report -> serve on an Iceberg output."""

from __future__ import annotations

import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from tests.test_writer_faults import DELTA_STEPS, GOOD, catalogue, harness
from tests.writer_harness import FEATURES, result, weight

STEPS = ["staged:tracks", "staged:explanations", *DELTA_STEPS[1:]]  # every step of the staged protocol


def use_catalog(monkeypatch, root: Path, name: str) -> str:
    """A SQL catalog on SQLite named ``name`` in pyiceberg's configuration (the environment,
    as a user's ``.pyiceberg.yaml`` would): nothing of it on a command line. S3 credentials,
    endpoint and region come from the AWS chain the suite's S3 server set."""
    prefix = f"PYICEBERG_CATALOG__{name.upper()}__"
    monkeypatch.setenv(prefix + "TYPE", "sql")
    monkeypatch.setenv(prefix + "URI", f"sqlite:///{root / f'{name}.db'}")
    monkeypatch.setenv("HARNESS_ICEBERG_CATALOG", name)
    return name


def tables_of(out: str, catalog: str):
    """The tables as the harness names them (or the default namespace, for a run.json output)."""
    from pipeline.iceberg import DEFAULT_NAMESPACE, IcebergTables
    from pipeline.output import location, read_json

    doc = read_json(location(out, "run.json"))
    namespace = DEFAULT_NAMESPACE if doc else out.rstrip("/").rsplit("/", 1)[-1].replace("-", "_")
    return IcebergTables(out, catalog, namespace)


def read(out: str, name: str, catalog: str) -> pl.DataFrame:
    """A table read back through pyiceberg's own scan, to Polars."""
    return pl.from_arrow(tables_of(out, catalog).table(name).scan().to_arrow())


def check_exactly_once(out: str, catalog: str) -> None:
    from musiclime import storage

    tracks = read(out, "tracks", catalog)
    assert sorted(tracks["track_id"]) == GOOD
    errors = read(out, "errors", catalog)
    assert sorted(errors["error_type"].value_counts().rows()) == [("duplicate_track_id", 4), ("missing_track_id", 4)]
    expl = read(out, "explanations", catalog)
    assert expl.height == len(GOOD) * len(FEATURES)
    assert expl.select("track_id", "label", "feature").is_duplicated().sum() == 0
    assert all(w == weight(t, f) for t, f, w in expl.select("track_id", "feature", "weight").iter_rows())
    assert storage.list_files(f"{out}/_staging") == [] and storage.list_files(f"{out}/_manifests") == []
    tables = tables_of(out, catalog)
    assert {tables.mark(t, "r") for t in ("tracks", "explanations", "errors")} == {len(GOOD)}


def killed_at_each_step(cat: Path, base: str, monkeypatch, root: Path, steps: list[str]) -> None:
    """Each step's scenario in its own catalog (an SQLite file: two processes committing to
    one at once may find it locked, which exits 1 and resumes, but is not this test's kill)."""
    names = {step: use_catalog(monkeypatch, root, f"kill{i}") for i, step in enumerate(steps)}

    def scenario(step: str):
        out, env = f"{base}/{step.replace(':', '-')}", {"HARNESS_ICEBERG_CATALOG": names[step]}
        codes = [harness(cat, out, f"{step}=kill@2", "iceberg", env).returncode]  # the second commit dies
        for _ in range(3):
            r = harness(cat, out, None, "iceberg", env)
            codes.append(r.returncode)
            if r.returncode == 0:
                break
        check_exactly_once(out, names[step])
        return step, codes, r.stderr[-2000:]

    with ThreadPoolExecutor(2) as pool:
        for step, codes, err in pool.map(scenario, steps):
            assert codes[0] == -signal.SIGKILL, (step, codes)
            assert codes[-1] == 0, (step, codes, err)


def test_every_commit_step_killed_then_resumed(tmp_path, monkeypatch):
    """SIGKILL after staging each table, after the manifest, between the tracks,
    explanations and errors commits and before cleanup, then resumed until done: every row
    once in each table, each table's mark (a property, set in its batch's commit) at the
    last batch."""
    killed_at_each_step(catalogue(tmp_path), str(tmp_path / "out"), monkeypatch, tmp_path, STEPS)


def test_on_s3_killed_between_the_table_commits_then_resumed(tmp_path, monkeypatch, s3):
    """The warehouse on the S3 test server (the catalog on SQLite): a SIGKILL after the
    manifest and between the tables' commits, then resumed: every row once in each table."""
    steps = ["manifest", "commit:tracks"]
    killed_at_each_step(catalogue(tmp_path), "s3://lib/iceberg-faults", monkeypatch, tmp_path, steps)


def test_a_standing_table_takes_columns_added_and_missing(tmp_path, monkeypatch):
    """An older release wrote tracks without content_key and the serve columns, a newer one
    explanations with weight_p (unknown here): this release's writer evolves the tables
    (new columns optional, nothing dropped) and commits; the readers take every run."""
    from pipeline import output
    from pipeline.global_importance import aggregate
    from pipeline.iceberg import IcebergTables
    from pipeline.iceberg_writer import IcebergRunWriter
    from tests.writer_harness import run_rows as rows

    catalog = use_catalog(monkeypatch, tmp_path, "evolve")
    out = str(tmp_path / "standing")
    tables = IcebergTables(out, catalog)

    old_t, old_e = rows("old", ["a", "b"])
    later_cols = ["content_key", "title", "artist", "album", "decoder", "audio_path", "audio_key", "lyrics"]
    tables.append("tracks", old_t.drop_columns(later_cols))
    tables.append("explanations", old_e.drop_columns(["sung_at_s"]))
    later_t, later_e = rows("later", ["c"])
    tables.append("explanations", later_e.append_column("weight_p", pa.array([0.01] * later_e.num_rows)))
    tables.append("tracks", later_t)
    (Path(out) / "run.json").write_text(json.dumps({"format": "iceberg", "iceberg": tables.record()}))
    w = IcebergRunWriter(out, "now", "inv", tables=tables)
    w.recover()
    for i, tid in enumerate(["d", "e"]):
        track, expl = result({"track_id": tid, "catalogue_row": i}, "inv")
        w.add_track(dict(track, content_key=f"{i:032x}"), expl)
    assert w.commit()
    expl = read(out, "explanations", catalog)
    assert expl.filter(pl.col("run_id") == "now")["weight_p"].null_count() == 2 * 3  # kept, null for this release
    names = [f.name for f in tables.table("tracks").schema().fields]
    assert set(later_cols) <= set(names)
    tracks = output.frame(out, "tracks")  # the output's readers, file by file
    assert sorted(tracks["track_id"]) == ["a", "b", "c", "d", "e"]
    assert tracks.filter(pl.col("run_id") == "old")["content_key"].null_count() == 2
    assert "weight_p" not in output.frame(out, "explanations").columns  # this release's schema
    assert set(aggregate(out, runs=["old", "later", "now"])["run_id"]) == {"old", "later", "now"}


@pytest.mark.parametrize("where", ["local", "s3"])
def test_explain_aggregate_report_serve_on_iceberg(where, ray_session, plugin_path, demo_library, tmp_path,
                                                   monkeypatch, s3):
    """Demo tracks explained into Iceberg tables (the catalog named by configuration; its
    URI in no record), read back with pyiceberg to Polars; ``aggregate`` writes
    global_importance as an Iceberg table (again: replaced, not doubled), ``report`` and
    ``serve``'s index read the output; a second night resumes the same tables; another
    catalog on a standing output is a usage error. The S3 secret is in no object."""
    from musiclime import storage
    from pipeline.config import ExplainConfig
    from pipeline.driver import run_explain
    from pipeline.global_importance import aggregate, write_global_importance
    from pipeline.output import read_json
    from pipeline.report import build_report
    from pipeline.serve.search import open_index

    catalog = use_catalog(monkeypatch, tmp_path, f"demo{where}")
    out = str(tmp_path / "out") if where == "local" else "s3://lib/iceberg-demo"
    base = dict(catalogue=str(demo_library / "catalogue.parquet"), model="mlplugins:make", separator="provided",
                out=out, num_samples=60, format="iceberg", iceberg_catalog=catalog)
    s = run_explain(ExplainConfig(**base, limit=3, run_id="n1"), show_progress=False)
    assert s.exit_code == 0 and s.format == "iceberg", s.message
    s = run_explain(ExplainConfig(**base, limit=5, run_id="n2", incremental=True), show_progress=False)
    assert s.exit_code == 0 and s.unchanged == 3, s
    doc = read_json(f"{out}/run.json")
    assert doc["format"] == "iceberg" and doc["iceberg"] == {"catalog": catalog, "namespace": "musiclime"}
    tracks = read(out, "tracks", catalog)
    assert tracks.group_by("run_id").len().sort("run_id").rows() == [("n1", 3), ("n2", 2)]
    members = read(out, "members", catalog)
    assert members.group_by("run_id").len().sort("run_id").rows() == [("n1", 3), ("n2", 5)]
    assert read(out, "explanations", catalog).select("run_id", "track_id").unique().height == 5
    for _ in range(2):  # the night's rows replaced, never doubled
        write_global_importance(out, aggregate(out))
        g = read(out, "global_importance", catalog)
        assert set(g["run_id"]) == {"n2"} and g.filter(pl.col("level") == "stem").height > 0
    assert g.height == aggregate(out).height
    report = build_report(out, audio=False)
    assert b"musiclime report n2" in storage.read_bytes(str(report))
    index = open_index(out, tmp_path / "serve-index")
    assert index.n == 5 and sorted(index.track_ids) == sorted(tracks["track_id"])
    import duckdb

    from pipeline.iceberg import load_catalog  # README's Spark-free query (this loader reads the config now)

    tracks = load_catalog(catalog).load_table("musiclime.tracks").scan(selected_fields=("track_id", "predicted")).to_arrow()
    assert duckdb.sql("select count(*) from tracks").fetchall() == [(5,)]
    other = run_explain(ExplainConfig(**{**base, "iceberg_namespace": "elsewhere"}, limit=1, run_id="n3"),
                        show_progress=False)
    assert other.exit_code == 2 and "namespace 'musiclime'" in other.message
    secret = os.environ["AWS_SECRET_ACCESS_KEY"].encode()
    for f in storage.list_files(out):
        assert secret not in storage.read_bytes(f), f
    assert secret not in (tmp_path / f"{catalog}.db").read_bytes()


def test_a_catalog_that_cannot_be_opened_is_a_usage_error_without_its_uri(plugin_path, tmp_path, monkeypatch):
    """An unknown catalog name, or one whose database cannot be opened, stops the run with
    exit 2 before anything is written; the message names the catalog, never its URI or the
    password inside it."""
    from pipeline.config import ExplainConfig
    from pipeline.driver import run_explain
    from pipeline.iceberg import redact

    bad = f"sqlite:///{tmp_path}/no-such-dir-s3cr3t/catalog.db"
    monkeypatch.setenv("PYICEBERG_CATALOG__BROKEN__TYPE", "sql")
    monkeypatch.setenv("PYICEBERG_CATALOG__BROKEN__URI", bad)
    cat = catalogue(tmp_path)
    for name, says in (("nosuch", "no Iceberg catalog named 'nosuch'"), ("broken", "'broken' could not be opened")):
        out = tmp_path / f"out-{name}"
        s = run_explain(ExplainConfig(catalogue=str(cat), model="mlplugins:make", out=str(out), format="iceberg",
                                      iceberg_catalog=name), show_progress=False)
        assert s.exit_code == 2 and says in s.message, s.message
        assert "s3cr3t" not in s.message and not (out / "run.json").exists()
    uri = "postgresql://musiclime:pa55word@db.internal:5432/iceberg"
    assert redact(f"cannot connect to {uri} as musiclime:pa55word", {"uri": uri}) == "cannot connect to *** as musiclime:***"


def test_a_long_night_keeps_its_metadata_bounded(tmp_path, monkeypatch):
    """Every commit adds a snapshot that each later metadata.json lists: the writer expires
    the oldest beyond the table's musiclime.snapshots-kept once twice as many stand, and the
    rows and marks stay whole."""
    from pipeline.iceberg import KEEP_PROPERTY, IcebergTables, mark_key

    tables = IcebergTables(str(tmp_path / "out"), use_catalog(monkeypatch, tmp_path, "long"))
    rows = pa.table({"track_id": ["a", "b"], "run_id": pa.array(["r", "r"])})
    tables.append("tracks", rows, {mark_key("r"): "1", KEEP_PROPERTY: "3"})
    counts = [len(tables.table("tracks").snapshots())]
    for seq in range(2, 11):
        tables.append("tracks", rows, {mark_key("r"): str(seq)})
        counts.append(len(tables.table("tracks").snapshots()))
    assert max(counts) == 6 and counts[6] == 3, counts  # the 7th commit expired the oldest four
    assert tables.table("tracks").scan().to_arrow().num_rows == 20 and tables.mark("tracks", "r") == 10
