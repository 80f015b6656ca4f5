"""Inputs on object storage, against a real S3 API server on 127.0.0.1 (moto in server mode):
catalogues (a file, a Parquet dataset folder, a Delta table), audio, stems and lyrics files
read through musiclime.storage; the same rows and the same weights as from local paths."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.catalogue import CatalogueError, CatalogueReader
from tests.test_guarantees import q, scan

ROOT = Path(__file__).resolve().parents[1]
MUSICLIME = str(Path(sys.executable).parent / "musiclime")
N = 6  # tracks explained from the bucket


def _upload(local: Path, uri: str) -> None:
    from musiclime import storage
    fs, path = storage.filesystem(uri)
    with fs.open_output_stream(path) as f:
        f.write(local.read_bytes())


PATHS = ("audio_path", "lyrics_path", "vocals_path", "drums_path", "bass_path", "other_path")


def upload_library(demo_library: Path, n: int, base: str, scratch: Path) -> pa.Table:
    """The first ``n`` demo tracks put under ``base`` (a catalogue with relative paths, and
    each track's audio, stems and lyrics); returns their catalogue rows."""
    rows = pq.read_table(demo_library / "catalogue.parquet").slice(0, n)
    pq.write_table(rows, scratch / "relative.parquet")
    _upload(scratch / "relative.parquet", f"{base}/catalogue.parquet")
    for r in rows.to_pylist():
        for c in PATHS:
            _upload(demo_library / r[c], f"{base}/{r[c]}")
    return rows


@pytest.fixture(scope="module")
def bucket_library(s3, demo_library, tmp_path_factory):
    """The first N demo tracks (catalogue with relative paths, audio, stems, lyrics) in
    s3://lib/demo/; returns (its URI, the same N rows locally with absolute paths)."""
    base = "s3://lib/demo"
    d = tmp_path_factory.mktemp("s3lib")
    rows = upload_library(demo_library, N, base, d)
    for c in PATHS:
        rows = rows.set_column(rows.schema.get_field_index(c), c,
                               pa.array([str(demo_library / p) for p in rows.column(c).to_pylist()]))
    pq.write_table(rows, d / "head.parquet")
    return base, d / "head.parquet"


def _rows(location) -> list[tuple]:
    out = []
    for r in CatalogueReader(location).rows():
        from musiclime import storage
        out.append((r["catalogue_row"], r["track_id"], r["lyrics"], storage.read_bytes(r["audio_path"])))
    return out


def test_every_catalogue_kind_reads_the_same_rows_locally_and_from_s3(bucket_library, demo_library, tmp_path):
    from deltalake import write_deltalake
    bucket_library, head = bucket_library
    table = pq.read_table(demo_library / "catalogue.parquet").slice(0, N)
    absolute = pq.read_table(head)
    want = _rows(head)
    assert [r[1] for r in want] == [f"demo-{i:05d}" for i in range(N)]
    # local: file:// URI, a Parquet dataset folder (two files), a Delta table
    (tmp_path / "ds").mkdir()
    pq.write_table(absolute.slice(0, 4), tmp_path / "ds" / "part-0.parquet")
    pq.write_table(absolute.slice(4), tmp_path / "ds" / "part-1.parquet")
    write_deltalake(str(tmp_path / "delta"), absolute)
    assert _rows("file://" + str(head)) == want
    assert CatalogueReader(tmp_path / "ds").kind == "dataset" and _rows(tmp_path / "ds") == want
    assert CatalogueReader(tmp_path / "delta").kind == "delta" and _rows(tmp_path / "delta") == want
    # S3: the file (relative paths resolve in the bucket), a dataset folder, a Delta table, CSV
    assert _rows(f"{bucket_library}/catalogue.parquet") == want
    pq.write_table(table, tmp_path / "rel.parquet")
    _upload(tmp_path / "rel.parquet", f"{bucket_library}/ds/part-0.parquet")
    write_deltalake(f"{bucket_library}/delta", table)
    import pyarrow.csv as pcsv
    pcsv.write_csv(table.select(["track_id", "audio_path", "lyrics"]), tmp_path / "c.csv")
    _upload(tmp_path / "c.csv", f"{bucket_library}/c.csv")
    # dataset and Delta folders sit one level down: their relative paths resolve from there
    for loc in (f"{bucket_library}/ds", f"{bucket_library}/delta"):
        assert [(r["track_id"], r["audio_path"]) for r in CatalogueReader(loc).rows()] == \
            [(f"demo-{i:05d}", f"{loc}/audio/demo-{i:05d}.flac") for i in range(N)]
    assert _rows(f"{bucket_library}/c.csv") == want
    with pytest.raises(CatalogueError, match="no catalogue at s3://lib/nothing.parquet"):
        CatalogueReader("s3://lib/nothing.parquet")
    # a missing object and a place that cannot be asked are told apart, per track
    from musiclime.audio_io import read_audio
    from musiclime.errors import InputError
    with pytest.raises(InputError) as missing:
        read_audio(f"{bucket_library}/audio/nothing.flac", 16000)
    with pytest.raises(InputError) as unreadable:
        read_audio("nosuchfs://somewhere/a.flac", 16000)
    assert (missing.value.code, unreadable.value.code) == ("missing_file", "unreadable_file")


@pytest.mark.parametrize("store", ["s3", "az"])
def test_the_stem_cache_on_an_object_store_is_shared_checked_and_safe_for_concurrent_writers(store, request):
    """On S3 (moto) and Azure Blob (Azurite)."""
    import threading

    import numpy as np
    import torch

    from musiclime import storage
    from musiclime.separation import StemCache, get_separator
    request.getfixturevalue({"s3": "s3", "az": "azure"}[store])
    root = f"{store}://lib/stems"
    sep = get_separator("hpss")
    audio = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 16000 * 2)).astype(np.float32))
    first = StemCache(root)
    stems, hit = first.separate(sep, audio, 16000)
    assert not hit
    other = StemCache(root)  # another node
    again, hit = other.separate(sep, audio, 16000)
    assert hit and torch.equal(stems, again)
    key = first.key(audio, 16000, sep)
    assert storage.is_file(first.path(key)) and first.path(key).startswith(f"{root}/")
    # writers of one entry at once: each puts a whole entry, and it reads back
    threads = [threading.Thread(target=first.store, args=(key, stems, sep.stem_names, 16000)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert torch.equal(other.load(key, audio.shape[1], sep.stem_names), stems)
    # a torn entry fails its checks, is recomputed and stored whole again
    storage.write_bytes(first.path(key), storage.read_bytes(first.path(key))[:1000])
    third = StemCache(root)
    fresh, hit = third.separate(sep, audio, 16000)
    assert not hit and third.recomputed == 1 and torch.equal(fresh, stems)
    assert StemCache(root).separate(sep, audio, 16000)[1]


ABANDON = """
import sys
from pipeline.catalogue import CatalogueReader
from pipeline.delta_writer import DeltaRunWriter
kind, location = sys.argv[1:3]
if kind == "catalogue":  # --limit stops reading a Delta catalogue after its first rows
    print(len(list(CatalogueReader(location, batch_rows=1, limit=1).rows())))
else:  # the writer's scan of its committed rows, left after the first batch
    print(len(next(DeltaRunWriter(location, "r", "x").scan("tracks", ["track_id"], batch_rows=1))["track_id"]))
"""


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_process_that_read_delta_tables_exits_cleanly(where, s3, tmp_path):
    """A Delta catalogue read under --limit and the writer's scan of committed rows, both
    left part-way, then the process exits: it exits 0. pyarrow reading through deltalake's
    default (Python) filesystem crashed at exit here (SIGSEGV / SIGABRT, or hung), losing
    the exit code of a night that had done its work."""
    from deltalake import write_deltalake

    from tests.test_writer_faults import catalogue
    base = f"s3://lib/exit-{where}" if where == "s3" else str(tmp_path / "out")
    for part in range(3):  # three files, so reads of the later ones are still queued
        write_deltalake(f"{base}/catalogue", pa.table({"track_id": [f"p{part}-{i}" for i in range(50)],
                                                        "lyrics": ["storm"] * 50}), mode="append")
    made = subprocess.run([sys.executable, "-m", "tests.writer_harness", str(catalogue(tmp_path)), base, "r", "delta"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr[-2000:]
    for _ in range(3):
        for kind, location in (("catalogue", f"{base}/catalogue"), ("writer", base)):
            r = subprocess.run([sys.executable, "-c", ABANDON, kind, location], cwd=ROOT, capture_output=True,
                               text=True, timeout=60)
            assert (r.returncode, r.stdout) == (0, "1\n"), (kind, r.returncode, r.stderr[-2000:])


def _explain(catalogue: str, out: Path, run_id: str, separator: str, env: dict, *extra: str):
    cmd = [MUSICLIME, "explain", catalogue, "--model", "mlplugins:make", "--separator", separator, "--out", str(out),
           "--num-samples", "120", "--limit", str(N), "--run-id", run_id, "--no-progress", "--address", "local",
           *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


# hpss (its CLI, its own Ray): audio decoded by range reads from the bucket, the stem cache
# there; stems given as S3 files are read the same way (tests/test_formats.py)
@pytest.mark.parametrize("separator", ["hpss"])
def test_explain_aggregate_report_from_s3_to_s3(bucket_library, plugin_path, s3, tmp_path, ray_session,
                                                caplog, separator):
    """``explain s3://.../catalogue.parquet --out s3://.../out`` (auto: Delta tables, a
    conditional-PUT lease) explains the same as the local copy into a local Parquet output
    (weights identical), reading audio, stems and lyrics from the bucket, the stem cache
    there too; ``aggregate`` and ``report`` run on the S3 output, and the tables read back
    from S3 with Polars and deltalake. hpss runs the CLI (its own Ray), provided the job on
    the suite's Ray. The secret key appears in no object, table, log or output."""
    import polars as pl
    from deltalake import DeltaTable

    from musiclime import storage
    from pipeline.config import ExplainConfig
    from pipeline.driver import run_explain
    bucket_library, head = bucket_library
    out = f"s3://lib/out-{separator}"
    local_out = tmp_path / "out"
    stems = f"s3://lib/stems-{separator}"  # hpss fills it
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")]),
               RAY_USAGE_STATS_ENABLED="0", MUSICLIME_HOME=str(tmp_path / "home"))
    if separator == "hpss":
        remote = _explain(f"{bucket_library}/catalogue.parquet", out, "s3", separator, env, "--stem-cache", stems)
        assert remote.returncode == 0, remote.stdout[-2000:] + remote.stderr[-3000:]
        assert "tables (delta)" in remote.stdout
        printed = remote.stdout + remote.stderr
    else:
        caplog.set_level("DEBUG")
        said: list[str] = []
        s = run_explain(ExplainConfig(catalogue=f"{bucket_library}/catalogue.parquet", model="mlplugins:make",
                                      separator=separator, out=out, num_samples=120, limit=N, run_id="s3",
                                      stem_cache=stems), log=said.append, show_progress=False)
        assert s.exit_code == 0 and s.format == "delta", s.message
        printed = "\n".join(said) + caplog.text
    local = run_explain(ExplainConfig(catalogue=str(head), model="mlplugins:make", separator=separator,
                                      out=str(local_out), num_samples=120, limit=N, run_id="local",
                                      stem_cache=str(tmp_path / "home" / "stems")), show_progress=False)
    assert local.exit_code == 0 and local.format == "parquet", local.message
    qw = (f"select track_id, label, feature, weight from {scan(local_out, 'explanations')} "
          f"order by track_id, label, feature")
    key = ["track_id", "label", "feature"]
    remote_expl = pl.read_delta(f"{out}/explanations").sort(key)  # Polars, from S3
    assert remote_expl["run_id"].unique().to_list() == ["s3"]
    assert remote_expl.select(*key, "weight").rows() == q(qw)
    tracks = pl.from_arrow(DeltaTable(f"{out}/tracks").to_pyarrow_table())  # deltalake, from S3
    assert sorted(tracks["track_id"]) == sorted({r[0] for r in q(qw)}) and tracks.height == N
    assert tracks["content_key"].null_count() == 0 and tracks["config_hash"].n_unique() == 1
    doc = json.loads(storage.read_bytes(f"{out}/runs/s3.json"))
    assert doc["format"] == "delta" and doc["config"]["catalogue"] == f"{bucket_library}/catalogue.parquet"
    assert not storage.is_file(f"{out}/_lease.json")  # released
    entries = storage.list_files(stems) if storage.is_dir(stems) else []
    assert len(entries) == (N if separator == "hpss" else 0), entries
    # aggregate and report on the S3 output, through the CLI
    for cmd in (["aggregate", out], ["report", out, "--no-audio"]):
        r = subprocess.run([MUSICLIME, *cmd], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        printed += r.stdout + r.stderr
    g = pl.read_delta(f"{out}/global_importance")
    from pipeline.global_importance import aggregate, write_global_importance
    write_global_importance(out, aggregate(out))  # again: the night's rows are replaced, never doubled
    assert pl.read_delta(f"{out}/global_importance").height == g.height
    assert set(g["run_id"]) == {"s3"} and set(g["model_id"]) == {doc["model_id"]}
    assert set(g["config_hash"]) == {doc["config_hash"]} and g.filter(pl.col("level") == "stem").height > 0
    html = storage.read_bytes(f"{out}/report.html").decode()
    assert "musiclime report" in html and f"{N} tracks explained" in html
    secret = s3["AWS_SECRET_ACCESS_KEY"].encode()
    leaks = [f for f in storage.list_files(out) if secret in storage.read_bytes(f)]
    leaks += [p for p in local_out.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert not leaks and secret.decode() not in printed
