"""One driver per output: the lease itself (no Ray)."""
from __future__ import annotations

import json
import os
import socket
import time

import pytest

from pipeline.lease import LEASE_FILE, Lease, LeaseHeld, LeaseLost


def foreign(out, age_s: float, host="other-host", pid=1234):
    p = out / LEASE_FILE
    p.write_text(json.dumps({"host": host, "pid": pid, "run_id": "x", "token": "t0",
                             "started": "2026-11-30T00:00:00", "stale_after_s": 60}))
    t = time.time() - age_s
    os.utime(p, (t, t))
    return p


def test_second_holder_is_refused_with_the_holder_named(tmp_path):
    with Lease(tmp_path, "a"):
        with pytest.raises(LeaseHeld) as e:
            Lease(tmp_path, "b").acquire()
        assert f"pid {os.getpid()}" in str(e.value) and socket.gethostname() in str(e.value)
    assert not (tmp_path / LEASE_FILE).exists()  # released
    Lease(tmp_path, "b").acquire().release()


def test_live_foreign_lease_is_respected_and_stale_one_taken_over(tmp_path):
    foreign(tmp_path, age_s=5)
    with pytest.raises(LeaseHeld, match="other-host"):
        Lease(tmp_path, "a").acquire()
    foreign(tmp_path, age_s=120)  # no heartbeat for 2 minutes
    lease = Lease(tmp_path, "a").acquire()
    assert json.loads((tmp_path / LEASE_FILE).read_text())["token"] == lease.token
    lease.release()


def test_dead_holder_on_this_host_is_taken_over_at_once(tmp_path):
    import subprocess
    p = subprocess.Popen(["sleep", "0"])
    p.wait()
    foreign(tmp_path, age_s=0, host=socket.gethostname(), pid=p.pid)
    Lease(tmp_path, "a").acquire().release()


def test_heartbeat_keeps_the_lease_fresh(tmp_path):
    lease = Lease(tmp_path, "a", stale_after=1.2).acquire()  # beats every 0.5 s
    try:
        first = (tmp_path / LEASE_FILE).stat().st_mtime
        time.sleep(1.6)
        assert (tmp_path / LEASE_FILE).stat().st_mtime > first
        with pytest.raises(LeaseHeld):  # older than stale_after since start, yet alive
            Lease(tmp_path, "b", stale_after=1.2).acquire()
    finally:
        lease.release()


def test_a_driver_whose_lease_was_taken_over_cannot_commit(tmp_path):
    from pipeline.writer import RunWriter
    from tests.writer_harness import result
    lease = Lease(tmp_path, "a").acquire()
    try:
        lease.check()
        foreign(tmp_path, age_s=0)  # another driver took it (as after a long pause)
        w = RunWriter(tmp_path, "a", "inv", lease=lease)
        w.add_track(*result({"track_id": "x", "catalogue_row": 0}, "inv"))
        with pytest.raises(LeaseLost, match="other-host"):
            w.commit()
        assert not (tmp_path / "tracks").exists()
    finally:
        lease.release()
    assert (tmp_path / LEASE_FILE).exists()  # the other driver's lease is left alone


# ------------------------------------------------------------------ on object stores (conditional writes)

@pytest.fixture(params=["s3", "az"])
def store(request):
    """The root of a bucket (S3: moto in server mode) or a container (Azure Blob: Azurite)."""
    request.getfixturevalue({"s3": "s3", "az": "azure"}[request.param])
    return f"{request.param}://lib"


def _foreign(uri: str, stale_after_s: float, host="other-host") -> None:
    from musiclime import storage
    storage.write_bytes(f"{uri}/{LEASE_FILE}", json.dumps(
        {"host": host, "pid": 1234, "run_id": "x", "token": "t0", "started": "2026-11-30T00:00:00",
         "stale_after_s": stale_after_s}).encode())


def _race(leases) -> list[bool]:
    """Every lease acquired at once; which ones won."""
    from concurrent.futures import ThreadPoolExecutor

    def take(lease):
        try:
            lease.acquire()
            return True
        except LeaseHeld:
            return False

    with ThreadPoolExecutor(len(leases)) as pool:
        return list(pool.map(take, leases))


def test_object_lease_refuses_a_second_holder_and_takes_over_a_stale_one(store):
    from musiclime import storage
    from pipeline.lease import AzureLease, S3Lease, make_lease
    out = f"{store}/lease-a"
    first = make_lease(out, "a", stale_after=30)
    assert isinstance(first, {"s3": S3Lease, "az": AzureLease}[store[:2]])
    with first:
        with pytest.raises(LeaseHeld, match=f"pid {os.getpid()}"):
            make_lease(out, "b").acquire()
        first.check()
    assert not storage.is_file(f"{out}/{LEASE_FILE}")  # released
    _foreign(out, stale_after_s=60)
    with pytest.raises(LeaseHeld, match="other-host"):
        make_lease(out, "b").acquire()
    _foreign(out, stale_after_s=1)
    time.sleep(2.2)  # the store's clock: Last-Modified against the response's Date
    lease = make_lease(out, "b").acquire()
    assert lease.read()["token"] == lease.token
    lease.release()


def test_object_lease_racing_takeovers_have_one_winner(store):
    """Eight drivers take a stale lease over at once: the conditional write on the stale
    ETag lets exactly one through, the others are refused naming it."""
    from pipeline.lease import make_lease
    out = f"{store}/lease-race"
    _foreign(out, stale_after_s=1)
    time.sleep(2.2)
    leases = [make_lease(out, f"r{i}", stale_after=30) for i in range(8)]
    won = _race(leases)
    assert sum(won) == 1
    winner = leases[won.index(True)]
    assert winner.read()["token"] == winner.token
    winner.release()


def test_object_lease_racing_creates_have_one_winner(store):
    """Eight drivers create the lease of a new output at once: one create passes."""
    from pipeline.lease import make_lease
    leases = [make_lease(f"{store}/lease-new", f"n{i}", stale_after=30) for i in range(8)]
    won = _race(leases)
    assert sum(won) == 1
    leases[won.index(True)].release()


def test_object_lease_heartbeat_keeps_it_and_a_taken_over_driver_cannot_commit(store):
    from pipeline.lease import make_lease
    out = f"{store}/lease-beat"
    lease = make_lease(out, "a", stale_after=1.5).acquire()  # refreshed every 0.5 s
    time.sleep(3)
    with pytest.raises(LeaseHeld):
        make_lease(out, "b", stale_after=1.5).acquire()
    lease._stop.set()  # the driver pauses (no more heartbeats) past the deadline
    lease._thread.join()
    time.sleep(2.2)
    other = make_lease(out, "b", stale_after=30).acquire()
    with pytest.raises(LeaseLost, match="no longer holds"):
        lease.check()
    lease.release()  # must not delete the new holder's lease
    assert other.read()["token"] == other.token
    other.release()


def test_an_object_store_output_with_another_driver_exits_2(store, plugin_path, tmp_path):
    """The driver refuses an output whose lease another live driver holds (exit 2)."""
    from pipeline.config import ExplainConfig
    from pipeline.driver import EXIT_USAGE, run_explain
    from pipeline.lease import make_lease
    cat = tmp_path / "c.csv"
    cat.write_text("track_id,audio_path\na,a.wav\n")
    with make_lease(f"{store}/lease-driver", "other", stale_after=30):
        s = run_explain(ExplainConfig(catalogue=str(cat), model="mlplugins:make", out=f"{store}/lease-driver"),
                        show_progress=False)
    assert s.exit_code == EXIT_USAGE and "in use by another musiclime driver" in s.message


@pytest.mark.parametrize("out", ["gs://lib/out", "hdfs://host/out"])
def test_outputs_on_stores_without_a_tested_lease_are_refused(out, plugin_path, tmp_path):
    """gs:// (and any store without conditional writes here) is refused for outputs, saying why."""
    from pipeline.config import ExplainConfig
    from pipeline.driver import EXIT_USAGE, run_explain
    cat = tmp_path / "c.csv"
    cat.write_text("track_id,audio_path\na,a.wav\n")
    s = run_explain(ExplainConfig(catalogue=str(cat), model="mlplugins:make", out=out), show_progress=False)
    assert s.exit_code == EXIT_USAGE and "not supported for outputs" in s.message
    assert ("read-only" in s.message) == out.startswith("gs://"), s.message
