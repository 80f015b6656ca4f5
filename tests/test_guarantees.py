"""The README's guarantees, broken on purpose on a real local Ray: two drivers on one
output, SIGTERM, a driver killed or failing in the middle of a commit, a catalogue that
grows between resumes, a resume with other settings, hostile run ids and catalogue cells."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import ExplainConfig, check_run_id
from pipeline.driver import EXIT_USAGE, run_explain
from pipeline.lease import LEASE_FILE

MUSICLIME = str(Path(sys.executable).parent / "musiclime")


def scan(out, table):
    return f"read_parquet('{out}/{table}/**/*.parquet', hive_partitioning=true)"


def q(sql):
    return duckdb.connect().execute(sql).fetchall()


def exactly_once(out, n_tracks: int, run_id: str | None = None) -> dict:
    where = f"where run_id = '{run_id}'" if run_id else ""
    counts = q(f"select track_id, count(*) from {scan(out, 'tracks')} {where} group by 1")
    assert len(counts) == n_tracks and {n for _, n in counts} == {1}, counts
    dup = q(f"select track_id, label, feature, count(*) from {scan(out, 'explanations')} {where} "
            f"group by 1, 2, 3 having count(*) > 1")
    assert dup == []
    return dict(q(f"select track_id, invocation_id from {scan(out, 'tracks')} {where}"))


def cli(demo_library, out, run_id, *extra, limit=10):
    return [MUSICLIME, "explain", str(demo_library / "catalogue.parquet"), "--model", "mlplugins:make",
            "--separator", "provided", "--out", str(out), "--num-samples", "400", "--limit", str(limit),
            "--run-id", run_id, "--commit-every", "1", "--no-progress", *extra]


def wait_for_files(part: Path, n: int, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline and len(list(part.glob("*.parquet"))) < n and proc.poll() is None:
        time.sleep(0.05)


def test_two_drivers_then_sigterm_then_rerun(plugin_path, demo_library, tmp_path):
    out = tmp_path / "out"
    n = 12
    args = cli(demo_library, out, "night", "--log-format", "json", "--status-every", "0.5", "--batch-size", "400",
               limit=n)
    args[args.index("mlplugins:make")] = "mlplugins:gated"
    args.remove("--no-progress")  # a status line every 0.5 s, as JSON (stderr is no terminal)
    # one model call per track (a batch of 400 masks); after 3 tracks the model waits while the gate
    # file exists, so the first driver is still busy when the second comes, however fast the machine
    gate = tmp_path / "gate"
    gate.touch()
    env = dict(os.environ, MLPLUGINS_GATE=str(gate), MLPLUGINS_GATE_AFTER="3")
    a = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        wait_for_files(out / "tracks" / "run_id=night", 3, a)
        assert a.poll() is None, a.communicate()[1][-2000:]
        holder = json.loads((out / LEASE_FILE).read_text())
        assert holder["pid"] == a.pid
        # a second driver on the same output, even for another run, is refused and told who holds it
        b = subprocess.run(cli(demo_library, out, "other"), capture_output=True, text=True, timeout=120)
        assert b.returncode == 2, b.stderr[-2000:]
        assert f"pid {a.pid}" in b.stderr and holder["host"] in b.stderr
        a.send_signal(signal.SIGTERM)  # as `ray job stop` or a pod eviction
        _, err = a.communicate(timeout=120)
        assert a.returncode == 1, err[-2000:]
        records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        assert any(r["logger"] == "musiclime.explain" and "interrupted" in r["message"] for r in records)
        status = [r for r in records if r["logger"] == "musiclime.progress"]
        assert status and status[-1]["total"] == n and 0 < status[-1]["done"] < n
        # the GPU stage's pool and busy share (after its first report) are in the status lines
        # (the last one may come while SIGTERM takes the pool down: 0 actors)
        assert any("1 GPU-stage actor(s)" in s["extra"] and "% busy" in s["extra"] for s in status), status[-3:]
    finally:
        if a.poll() is None:
            os.killpg(a.pid, signal.SIGKILL)
        try:
            os.killpg(a.pid, signal.SIGKILL)  # the local Ray it started, if any is left
        except ProcessLookupError:
            pass
    assert not (out / LEASE_FILE).exists()  # released on the way out
    before = exactly_once(out, len(q(f"select 1 from {scan(out, 'tracks')}")))
    assert len(before) == 3  # the tracks answered before the gate, committed one by one
    gate.unlink()
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    after = exactly_once(out, n)
    assert all(after[t] == inv for t, inv in before.items())  # committed tracks were not recomputed


# An exception at each commit step is proven without Ray (tests/test_writer_faults.py); the
# end-to-end run keeps the SIGKILL inside a commit (with no recompute of what was committed).
@pytest.mark.parametrize("failpoint,first_exit", [("ready=kill@3", -signal.SIGKILL)])
def test_driver_broken_inside_a_commit_resumes_exactly_once(plugin_path, demo_library, tmp_path, failpoint,
                                                            first_exit):
    out = tmp_path / "out"
    args = cli(demo_library, out, "f", limit=6)
    env = dict(os.environ, MUSICLIME_FAILPOINTS=failpoint)
    p = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    _, err = p.communicate(timeout=600)
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    assert p.returncode == first_exit, err[-2000:]
    before = dict(q(f"select track_id, invocation_id from {scan(out, 'tracks')}"))
    assert 2 <= len(before) < 6
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    after = exactly_once(out, 6)
    assert all(after[t] == inv for t, inv in before.items())  # committed tracks were not recomputed
    assert not list((out / "_staging").rglob("*.parquet"))


def _rows(demo_library, ids):
    from pipeline.catalogue import read_catalogue  # paths resolved against the library
    rows = {r["track_id"]: {k: v for k, v in r.items() if k != "catalogue_row"}
            for r in read_catalogue(demo_library / "catalogue.parquet")}
    return [rows[t] for t in ids]


def test_resume_matches_rows_by_track_id(ray_session, plugin_path, demo_library, tmp_path):
    ids = [f"demo-{i:05d}" for i in range(9)]
    cat, out = tmp_path / "cat.parquet", tmp_path / "out"
    pq.write_table(pa.Table.from_pylist(_rows(demo_library, ids[2:8])), cat)
    c = ExplainConfig(catalogue=str(cat), model="mlplugins:make", out=str(out), separator="provided",
                      num_samples=120, run_id="grow", commit_every=4)
    first = run_explain(c, show_progress=False)
    assert first.exit_code == 0 and first.computed == 6
    before = exactly_once(out, 6)
    # two rows inserted before, one appended: every old row moves
    pq.write_table(pa.Table.from_pylist(_rows(demo_library, ids[:2] + ids[2:8] + ids[8:])), cat)
    again = run_explain(c, show_progress=False)
    assert again.exit_code == 0 and again.computed == 3 and again.skipped == 6
    after = exactly_once(out, 9)
    assert all(after[t] == inv for t, inv in before.items())
    hashes = q(f"select distinct config_hash from {scan(out, 'tracks')}")
    assert len(hashes) == 1 and hashes[0][0] == json.loads((out / "run.json").read_text())["config_hash"]


def test_resume_with_other_settings_is_refused(ray_session, plugin_path, demo_library, tmp_path):
    cat, out = tmp_path / "cat.parquet", tmp_path / "out"
    pq.write_table(pa.Table.from_pylist(_rows(demo_library, ["demo-00000", "demo-00001"])), cat)
    c = ExplainConfig(catalogue=str(cat), model="mlplugins:make", out=str(out), separator="provided",
                      num_samples=120, run_id="s")
    assert run_explain(c, show_progress=False).exit_code == 0
    changed = ExplainConfig(**{**c.to_json(), "num_samples": 200, "seed": 5, "predictors": 2})
    s = run_explain(changed, show_progress=False)
    assert s.exit_code == EXIT_USAGE
    assert "num_samples: '120' before, '200' now" in s.message and "seed: 0 before, 5 now" in s.message
    assert "predictors" not in s.message  # how the work is spread may change
    # the CLI says the same on stderr with exit 2, and touches nothing
    r = subprocess.run([MUSICLIME, "explain", str(cat), "--model", "mlplugins:make", "--separator", "provided",
                        "--out", str(out), "--run-id", "s", "--num-samples", "120", "--segments", "8"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "segments: 10 before, 8 now" in r.stderr
    exactly_once(out, 2)


@pytest.mark.parametrize("run_id", ["night\n", "night\r", "a\tb", "../x", "x" * 129, ""])
def test_run_ids_must_match_whole(run_id, tmp_path):
    with pytest.raises(ValueError):
        check_run_id(run_id)
    if run_id:
        r = subprocess.run([MUSICLIME, "explain", str(tmp_path / "nothing.csv"), "--out", str(tmp_path / "o"),
                            "--run-id", run_id], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2
        assert not (tmp_path / "o" / "runs").exists()


def test_csv_cells_are_text_and_a_bad_cell_fails_only_its_row(ray_session, plugin_path, demo_library, tmp_path):
    src = _rows(demo_library, ["demo-00000", "demo-00001", "demo-00002"])
    cat = tmp_path / "cat.csv"
    lines = [b"track_id,lyrics,vocals_path,drums_path,bass_path,other_path"]
    for tid, r, lyr in zip(["007", "NA", "true"], src, [b"storm", b"caf\xe9 storm", b"night"]):
        lines.append(b",".join([tid.encode(), lyr] + [r[f"{s}_path"].encode() for s in ("vocals", "drums", "bass", "other")]))
    cat.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    s = run_explain(ExplainConfig(catalogue=str(cat), model="mlplugins:make", out=str(out), separator="provided",
                                  num_samples=120, run_id="csv"), show_progress=False)
    assert s.exit_code == 3
    assert sorted(t for (t,) in q(f"select track_id from {scan(out, 'tracks')}")) == ["007", "true"]
    assert q(f"select track_id, error_type, stage from {scan(out, 'errors')}") == [
        ("NA", "catalogue_decode_error", "catalogue")]


def _catalogue_with_bad_track(demo_library, tmp_path, word: str):
    """Three demo tracks with a fourth, second in line, whose lyrics are ``word``."""
    rows = _rows(demo_library, ["demo-00000", "demo-00001", "demo-00002"])
    rows.insert(1, {**rows[0], "track_id": word, "lyrics": word})
    cat = tmp_path / "cat.parquet"
    pq.write_table(pa.Table.from_pylist(rows), cat)
    return cat


POISON = '''
import os
import signal

from mlplugins import Stormy


class Poisoned(Stormy):
    def predict_proba(self, audio, lyrics):
        if any("poison" in s for s in lyrics):
            os.kill(os.getpid(), signal.SIGKILL)  # this input takes the worker down, every time
        return super().predict_proba(audio, lyrics)


def make():
    return Poisoned()
'''


def test_a_track_that_kills_its_worker_is_recorded_as_worker_crash(ray_session, plugin_path, demo_library, tmp_path):
    (plugin_path / "poison_plugin.py").write_text(POISON)
    cat = _catalogue_with_bad_track(demo_library, tmp_path, "poison")
    out = tmp_path / "out"
    s = run_explain(ExplainConfig(catalogue=str(cat), model="poison_plugin:make", out=str(out), separator="provided",
                                  num_samples=120, run_id="p"), show_progress=False)
    assert s.exit_code == 3, s.message
    assert q(f"select track_id, error_type from {scan(out, 'errors')}") == [("poison", "worker_crash")]
    exactly_once(out, 3)


def test_a_poison_track_in_a_group_separated_together_is_recorded_alone(ray_session, plugin_path, demo_library,
                                                                       tmp_path):
    """demucs separating groups of 4 (--separation-batch 4): the poison track is separated
    with its group by the group's first call, then kills the predictor when explained. It
    alone is recorded as worker_crash; its neighbours, separated beside it and lost with
    the predictor, are explained once each, from the stems the group cached."""
    from tests.demucs_tiny import save_tiny_demucs
    (plugin_path / "poison_plugin.py").write_text(POISON)
    cat = _catalogue_with_bad_track(demo_library, tmp_path, "poison")
    out, stems = tmp_path / "out", tmp_path / "stems"
    s = run_explain(ExplainConfig(catalogue=str(cat), model="poison_plugin:make", out=str(out), separator="demucs",
                                  demucs_model="tiny", demucs_repo=str(save_tiny_demucs(tmp_path / "demucs")),
                                  stem_cache=str(stems), separation_batch=4, num_samples=120, run_id="g"),
                    show_progress=False)
    assert s.exit_code == 3, s.message
    assert q(f"select track_id, error_type from {scan(out, 'errors')}") == [("poison", "worker_crash")]
    exactly_once(out, 3)
    # the poison track plays the first track's audio: 3 audios, each separated and cached once
    assert len(list(stems.rglob("*.safetensors"))) == 3


FRAGILE = '''
import os
import signal
from pathlib import Path

from mlplugins import Stormy

GONE, FIRED = Path({gone!r}), Path({fired!r})


class Fragile(Stormy):
    def predict_proba(self, audio, lyrics):
        if any("vanish" in s for s in lyrics) and not FIRED.exists():
            FIRED.touch()
            GONE.touch()                            # the weights vanish from the node
            os.kill(os.getpid(), signal.SIGKILL)    # and the worker dies: Ray restarts it
        return super().predict_proba(audio, lyrics)


def make():
    if GONE.exists():
        raise FileNotFoundError(f"model weights missing: {{GONE}}")
    return Fragile()
'''


def test_a_pool_that_can_no_longer_load_its_model_fails_resumably(ray_session, plugin_path, demo_library, tmp_path):
    """A predictor that died restarts by loading its model again. Where that fails for every
    predictor, the rows would wait forever: the run fails instead (exit 1, the model's own
    error in the message), keeps what it committed, and once the model loads again the same
    command finishes the rest, every track exactly once."""
    gone, fired = tmp_path / "gone", tmp_path / "fired"
    (plugin_path / "fragile_plugin.py").write_text(FRAGILE.format(gone=str(gone), fired=str(fired)))
    cat = _catalogue_with_bad_track(demo_library, tmp_path, "vanish")
    out = tmp_path / "out"
    cfg = ExplainConfig(catalogue=str(cat), model="fragile_plugin:make", out=str(out), separator="provided",
                        num_samples=120, run_id="f", commit_every=1)
    t0 = time.monotonic()
    s = run_explain(cfg, show_progress=False)
    assert s.exit_code == 1, s.message
    assert "no GPU-stage actor can load the model" in s.message and "model weights missing" in s.message, s.message
    assert time.monotonic() - t0 < 120
    committed = q(f"select count(*) from {scan(out, 'tracks')}")[0][0] if list(out.glob("tracks/**/*.parquet")) else 0
    assert committed < 4
    gone.unlink()
    again = run_explain(cfg, show_progress=False)
    assert again.exit_code == 0, again.message
    assert again.skipped == committed and again.explained == 4 and again.failed == 0
    exactly_once(out, 4)


HANG = '''
import time

from mlplugins import Stormy


class Hanging(Stormy):
    def predict_proba(self, audio, lyrics):
        if any("hang" in s for s in lyrics):
            time.sleep(3600)  # this input never finishes
        time.sleep(0.3)  # the others are slow: a track takes longer than the stall deadline
        return super().predict_proba(audio, lyrics)


def make():
    return Hanging()
'''


def test_a_stalled_predictor_is_replaced_and_a_track_stalling_twice_is_timeout(ray_session, plugin_path,
                                                                                demo_library, tmp_path, caplog):
    """The deadline is per model batch: the good tracks take longer than it (15 batches of
    0.3 s against 3 s) and are never stalled; the hanging one finishes no batch."""
    (plugin_path / "hang_plugin.py").write_text(HANG)
    cat = _catalogue_with_bad_track(demo_library, tmp_path, "hang")
    out = tmp_path / "out"
    t0 = time.perf_counter()
    logger = logging.getLogger("musiclime.explain")  # the job's loggers do not propagate to the root
    logger.addHandler(caplog.handler)
    try:
        s = run_explain(ExplainConfig(catalogue=str(cat), model="hang_plugin:make", out=str(out),
                                      separator="provided", num_samples=120, batch_size=8, run_id="h",
                                      stall_timeout=3.0), show_progress=False)
    finally:
        logger.removeHandler(caplog.handler)
    assert s.exit_code == 3, s.message
    assert q(f"select track_id, error_type from {scan(out, 'errors')}") == [("hang", "timeout")]
    exactly_once(out, 3)
    # by record (its time), not its text: two stalls of the same slot with the same track count
    # read alike, and the handler may see a record twice (here and through propagation)
    stalls = {(r.created, r.getMessage()) for r in caplog.records if "finished no model batch" in r.getMessage()}
    assert len(stalls) == 2 and all("on track 'hang'" in m for _, m in stalls), stalls  # never a slow one
    assert time.perf_counter() - t0 < 120


def _records_cfg(demo_library, out, run_id, **kw):
    return ExplainConfig(catalogue=str(demo_library / "catalogue.parquet"), model="mlplugins:make", out=str(out),
                         separator="provided", num_samples=120, limit=2, run_id=run_id, commit_every=1, **kw)


@pytest.mark.parametrize("hit", [1, 2])  # the run's first record write ("running"), its last ("finished")
def test_a_crash_between_the_run_records_leaves_them_consistent(ray_session, plugin_path, demo_library, tmp_path,
                                                                 hit, monkeypatch):
    """``runs/<run>.json`` is written first, then its copy ``run.json``: broken between the
    two, every reader (which takes runs from runs/*.json) sees a whole record of the run, and
    the rerun writes both alike. (A raise leaves the files as a SIGKILL there would.)"""
    from pipeline import failpoints, output
    out = tmp_path / "out"
    c = _records_cfg(demo_library, out, "rec")
    failpoints._hits.clear()
    monkeypatch.setenv(failpoints.ENV, f"run-record:between=raise@{hit}")
    with pytest.raises(failpoints.InjectedFault):
        run_explain(c, show_progress=False)
    monkeypatch.delenv(failpoints.ENV)
    record = json.loads((out / "runs" / "rec.json").read_text())
    assert record["status"] == ("running" if hit == 1 else "finished")
    if hit == 1:
        assert not (out / "run.json").exists()
    else:  # the copy is one write behind: a whole record of the same run
        assert json.loads((out / "run.json").read_text())["status"] == "running"
    assert output.night_doc(str(out))["status"] == record["status"]
    again = run_explain(c, show_progress=False)
    assert again.exit_code == 0
    assert (out / "run.json").read_bytes() == (out / "runs" / "rec.json").read_bytes()
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    exactly_once(out, 2)


def test_a_resume_refused_on_its_model_writes_nothing(ray_session, plugin_path, demo_library, tmp_path):
    """The model's hash is known once a predictor has loaded it: a resume whose model
    changed is refused after that, before the run's records or tables are touched."""
    from dataclasses import replace
    out = tmp_path / "out"
    other = plugin_path / "mlplugins_other.py"  # the same model with another source: another model hash
    other.write_text((plugin_path / "mlplugins.py").read_text() + "\n# another release\n")
    c = _records_cfg(demo_library, out, "m")
    assert run_explain(c, show_progress=False).exit_code == 0
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and "lease" not in p.name.lower()}
    s = run_explain(replace(c, model="mlplugins_other:make", limit=3, retry_errors=True), show_progress=False)
    assert s.exit_code == EXIT_USAGE and "model_id" in s.message, s.message
    after = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and "lease" not in p.name.lower()}
    assert after == before  # run.json's status included
