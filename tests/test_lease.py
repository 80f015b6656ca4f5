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
