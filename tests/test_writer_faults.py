"""Exactly once under any interruption of a commit: an exception, and separately a
SIGKILL, at every step of the writer's commit protocol, then resumes until the run ends.
Runs the driver's commit path (reader -> planner -> writer) in a subprocess."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.writer import RunWriter
from tests.writer_harness import FEATURES, weight

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["staged:explanations", "staged:errors", "staged:tracks", "ready",
         "renamed:explanations", "renamed:errors", "renamed:tracks", "cleanup"]
GOOD = [f"t{i}" for i in range(8)]


def catalogue(root: Path) -> Path:
    """8 tracks, each followed by a row that goes to errors (a repeat or a missing id), so
    every batch of two holds a track and an error: each step is hit with all tables."""
    rows = []
    for i, tid in enumerate(GOOD):
        rows.append(dict(track_id=tid, lyrics="storm"))
        rows.append(dict(track_id=tid if i % 2 else None, lyrics="again"))
    path = root / "catalogue.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def harness(cat: Path, out: Path | str, failpoint: str | None, fmt: str = "parquet",
            env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in {**os.environ, **(env_extra or {})}.items() if k != "MUSICLIME_FAILPOINTS"}
    if failpoint:
        env["MUSICLIME_FAILPOINTS"] = failpoint
    return subprocess.run([sys.executable, "-m", "tests.writer_harness", str(cat), str(out), "r", fmt], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def check_exactly_once(out: Path) -> None:
    con = duckdb.connect()
    scan = lambda t: f"read_parquet('{out}/{t}/**/*.parquet', hive_partitioning=true)"  # noqa: E731
    tracks = con.execute(f"select track_id, count(*) from {scan('tracks')} group by 1").fetchall()
    assert sorted(tracks) == [(t, 1) for t in GOOD]
    errors = con.execute(f"select error_type, count(*) from {scan('errors')} group by 1 order by 1").fetchall()
    assert errors == [("duplicate_track_id", 4), ("missing_track_id", 4)]
    expl = con.execute(f"select track_id, label, feature, count(*), any_value(weight) from {scan('explanations')} "
                       f"group by 1, 2, 3").fetchall()
    assert len(expl) == len(GOOD) * len(FEATURES)
    assert all(n == 1 for _, _, _, n, _ in expl)
    assert all(w == weight(t, f) for t, _, f, _, w in expl)
    assert not list((out / "_staging").rglob("*.parquet"))


@pytest.mark.parametrize("action", ["raise", "kill"])
def test_every_commit_step_interrupted_then_resumed(tmp_path, action):
    cat = catalogue(tmp_path)

    def scenario(step: str) -> tuple[str, list[int]]:
        out = tmp_path / f"{action}-{step.replace(':', '-')}"
        r = harness(cat, out, f"{step}={action}@2")  # the second commit breaks; the first landed
        codes = [r.returncode]
        for _ in range(3):  # resume until done
            r = harness(cat, out, None)
            codes.append(r.returncode)
            if r.returncode == 0:
                break
        check_exactly_once(out)
        return step, codes, r.stderr[-2000:]

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(scenario, STEPS))
    want_first = 1 if action == "raise" else -signal.SIGKILL
    for step, codes, err in results:
        assert codes[0] == want_first, (step, codes)  # the fault really happened
        assert codes[-1] == 0, (step, codes, err)


def test_ready_batch_is_never_committed_twice(tmp_path):
    """After a failure past READY the writer's buffer is already empty: committing again
    (as the driver's error path does) rolls the batch forward, and adds nothing."""
    os.environ["MUSICLIME_FAILPOINTS"] = "renamed:tracks=raise@1"
    try:
        from pipeline import failpoints
        failpoints._hits.clear()
        from tests.writer_harness import result
        w = RunWriter(tmp_path, "r", "inv", commit_every=10)
        w.add_track(*result({"track_id": "a", "catalogue_row": 0}, "inv"))
        with pytest.raises(failpoints.InjectedFault):
            w.commit()
        assert w.pending == 0
        assert w.commit() is False  # nothing new, but the READY batch is finished
    finally:
        del os.environ["MUSICLIME_FAILPOINTS"]
    assert len(list((tmp_path / "tracks").rglob("*.parquet"))) == 1
    assert len(list((tmp_path / "explanations").rglob("*.parquet"))) == 1
    assert not any((tmp_path / "_staging" / "r").iterdir())


def test_recovery_moves_only_what_ready_names(tmp_path):
    from tests.writer_harness import result
    w = RunWriter(tmp_path, "r", "inv")
    stage = w.staging / "0000000000001-x-000000"
    stage.mkdir(parents=True)
    track, expl = result({"track_id": "a", "catalogue_row": 0}, "inv")
    pq.write_table(pa.Table.from_pylist([track], schema=__import__("schemas.tables").tables.TRACKS),
                   stage / "tracks.parquet")
    pq.write_table(expl, stage / "explanations.parquet")
    (stage / "READY").write_text('{"files": {"tracks": "tracks/run_id=r/part-x.parquet"}, "rows": 1}')
    orphan = w.staging / "0000000000002-y-000000"  # staged, never READY
    orphan.mkdir()
    pq.write_table(expl, orphan / "explanations.parquet")
    assert w.recover() == 1
    assert [p.name for p in (tmp_path / "tracks" / "run_id=r").iterdir()] == ["part-x.parquet"]
    assert not (tmp_path / "explanations").exists()  # not named by READY: not moved
    assert not stage.exists() and not orphan.exists()


DELTA_STEPS = ["staged:tracks", "manifest", "commit:tracks", "commit:explanations", "commit:errors", "cleanup"]


def check_delta_exactly_once(out: str) -> None:
    import polars as pl
    from deltalake import DeltaTable

    from musiclime import storage
    read = lambda t: pl.from_arrow(DeltaTable(f"{out}/{t}").to_pyarrow_table())  # noqa: E731
    tracks = read("tracks")
    assert sorted(tracks["track_id"].to_list()) == GOOD
    errors = read("errors").group_by("error_type").len().sort("error_type").rows()
    assert errors == [("duplicate_track_id", 4), ("missing_track_id", 4)]
    expl = read("explanations")
    assert expl.height == len(GOOD) * len(FEATURES)
    assert expl.select("track_id", "label", "feature").is_duplicated().sum() == 0
    assert all(w == weight(t, f) for t, f, w in expl.select("track_id", "feature", "weight").iter_rows())
    assert storage.list_files(f"{out}/_staging") == [] and storage.list_files(f"{out}/_manifests") == []


@pytest.mark.parametrize("store", ["s3", "az"])
def test_delta_on_an_object_store_every_commit_step_killed_then_resumed(tmp_path, store, request):
    """The Delta writer on a real S3 API server (moto) and on Azure Blob (Azurite),
    SIGKILLed at each step of a commit (after staging, after the manifest, between the
    tracks, explanations and errors commits, before cleanup), then resumed until done:
    every row once in each table, weights intact."""
    request.getfixturevalue({"s3": "s3", "az": "azure"}[store])
    cat = catalogue(tmp_path)

    def scenario(step: str) -> tuple[str, list[int]]:
        out = f"{store}://lib/faults/{step.replace(':', '-')}"
        codes = [harness(cat, out, f"{step}=kill@2", "delta").returncode]  # the second commit dies
        for _ in range(3):
            r = harness(cat, out, None, "delta")
            codes.append(r.returncode)
            if r.returncode == 0:
                break
        check_delta_exactly_once(out)
        return step, codes, r.stderr[-2000:]

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(scenario, DELTA_STEPS))
    for step, codes, err in results:
        assert codes[0] == -signal.SIGKILL, (step, codes)
        assert codes[-1] == 0, (step, codes, err)  # a crash at exit says why


def test_delta_commit_retried_after_a_failure_is_a_no_op(tmp_path):
    """A commit that fails between table commits leaves its manifest: the next commit rolls
    it into the tables still lacking it (their transaction version is lower) and the
    others are skipped, so each table holds the batch once."""
    from deltalake import DeltaTable

    from pipeline import failpoints
    from pipeline.delta_writer import DeltaRunWriter
    from tests.writer_harness import result
    os.environ["MUSICLIME_FAILPOINTS"] = "commit:explanations=raise@1"
    try:
        failpoints._hits.clear()
        w = DeltaRunWriter(str(tmp_path), "r", "inv", commit_every=10)
        w.recover()
        w.add_track(*result({"track_id": "a", "catalogue_row": 0}, "inv"))
        with pytest.raises(failpoints.InjectedFault):
            w.commit()
        assert w.pending == 0 and w.version_of("tracks") == 1 and w.version_of("explanations") == 1
        w.add_track(*result({"track_id": "b", "catalogue_row": 1}, "inv"))
        assert w.commit() is True
    finally:
        del os.environ["MUSICLIME_FAILPOINTS"]
    assert sorted(DeltaTable(str(tmp_path / "tracks")).to_pyarrow_table()["track_id"].to_pylist()) == ["a", "b"]
    expl = DeltaTable(str(tmp_path / "explanations")).to_pyarrow_table()
    assert expl.num_rows == 2 * len(FEATURES)
    assert DeltaTable(str(tmp_path / "tracks")).transaction_version("musiclime:r") == 2
