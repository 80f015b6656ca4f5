"""The scheduler's rules, one test each, without Ray (milliseconds): the policy is driven
with events as the loop would send them and its commands are checked."""

from __future__ import annotations

import pytest

from musiclime.records import ErrorRecord, TrackResult
from pipeline.engine.faults import Failure
from pipeline.engine.policy import Cancel, Heartbeat, Kill, Limits, Policy, Probe, Record, Submit

CRASH = Failure(infrastructure=True, stage="predict", error_type="RayActorError", message="actor died")


def crash_of(predictor: int) -> Failure:
    return Failure(True, "predict", "RayActorError", "actor died", dead_predictor=predictor)


def row(i: int) -> dict:
    return {"track_id": f"t{i}", "catalogue_row": i, "content_key": f"key{i}"}


def policy(window: int = 8, **kw) -> Policy:
    return Policy(Limits(window=lambda n: window, **kw))


def submits(cmds) -> list[Submit]:
    return [c for c in cmds if isinstance(c, Submit)]


def records(cmds) -> list[Record]:
    return [c for c in cmds if isinstance(c, Record)]


def result(i: int) -> TrackResult:
    return TrackResult(track={"track_id": f"t{i}", "catalogue_row": i}, explanations=None, model_rows=10)


def test_rows_go_to_the_least_loaded_ready_predictor():
    p = policy()
    placed = [submits(p.admit(row(i), {0, 1}, 0.0))[0].predictor for i in range(4)]
    assert placed == [0, 1, 0, 1]
    assert p.load(0) == p.load(1) == 2


def test_the_in_flight_window_bounds_new_rows():
    p = Policy(Limits(window=lambda ready: 2 * ready + 1))
    n = 0
    while p.has_room({0}):
        p.admit(row(n), {0}, 0.0)
        n += 1
    assert n == 3 and len(p.inflight) == 3
    assert not p.has_room(set())  # no predictor ready: window of 1 is already full
    assert p.has_room({0, 1})  # the window grows with the ready predictors


def test_rows_start_in_whole_groups_when_tracks_are_separated_together():
    """--separation-batch 4, window 10: a round starts only when 4 rows fit, so that the
    rows a predictor gets together can be separated together; a window smaller than a
    group still lets rows start."""
    p = policy(window=10, group=4)
    assert p.room({0}) == 10
    tickets = [submits(p.admit(row(i), {0}, 0.0))[0].ticket for i in range(7)]
    assert p.room({0}) == 0  # 3 free: less than a group
    p.done(tickets[0], result(0))
    assert p.room({0}) == 4  # a whole group fits again
    small = policy(window=3, group=8)
    assert small.room({0}) == 3
    assert policy(window=5).room({0}) == 5  # group 1: every free slot, as before groups
    queued = policy(window=10, group=4)
    queued.admit(row(0), set(), 0.0)  # waits for a predictor: nothing new starts meanwhile
    assert queued.room({0}) == 0


def test_no_ready_predictor_queues_the_row_until_one_is():
    p = policy()
    assert p.admit(row(0), set(), 0.0) == []
    assert not p.has_room({0}) and not p.drained()  # a queued retry holds new rows back
    (s,) = submits(p.schedule({1}, {}, 1.0))
    assert s.row["track_id"] == "t0" and s.predictor == 1


def test_a_death_retries_the_track_alone_on_another_predictor():
    p = policy()
    a = submits(p.admit(row(0), {0, 1}, 0.0))[0]
    b = submits(p.admit(row(1), {0, 1}, 0.0))[0]
    assert (a.predictor, b.predictor) == (0, 1)
    cmds = p.failed(a.ticket, crash_of(0), {0, 1}, 1.0)
    assert cmds == [Probe(0)] and p.crashes["t0"] == 0  # beside others: not counted
    assert not p.has_room({0, 1})  # new rows wait while a suspect queues
    # predictor 1 is busy with t1: the suspect waits for a free predictor other than 0
    assert submits(p.schedule({0, 1}, {}, 2.0)) == []
    assert records(p.done(b.ticket, result(1)))[0].content_key == "key1"
    (s,) = submits(p.schedule({0, 1}, {}, 3.0))
    assert s.row["track_id"] == "t0" and s.predictor == 1
    assert p.reserved == {1: s.ticket} and p.inflight[s.ticket].alone


def test_three_deaths_alone_make_worker_crash_and_neighbours_are_never_blamed():
    p = policy(window=2)
    poison = submits(p.admit(row(0), {0}, 0.0))[0]
    neighbour = submits(p.admit(row(1), {0}, 0.0))[0]
    # the poison track kills its predictor with the neighbour on it: both retried alone
    assert p.failed(poison.ticket, crash_of(0), {0}, 1.0) == [Probe(0)]
    assert p.failed(neighbour.ticket, crash_of(0), set(), 1.0) == []
    assert [r["track_id"] for r, _ in p.suspects] == ["t0", "t1"]
    deaths, explained, error = 0, [], None
    for step in range(20):
        for s in submits(p.schedule({0}, {}, 2.0 + step)):
            assert len(p.inflight) == 1  # a suspect always runs alone
            if s.row["track_id"] == "t0":
                deaths += 1
                out = records(p.failed(s.ticket, crash_of(0), {0}, 3.0 + step))
                error = out[0].outcome if out else None
            else:
                explained += [r.outcome for r in records(p.done(s.ticket, result(1)))]
        if p.drained():
            break
    assert [r.track["track_id"] for r in explained] == ["t1"]  # the neighbour is explained
    assert error.error_type == "worker_crash" and error.track_id == "t0"
    assert p.drained() and deaths == 3
    assert p.crashes == {"t0": 3, "t1": 0}


def test_worker_crash_error_row_names_the_track_and_carries_its_key():
    p = policy(window=1)
    s = submits(p.admit(row(5), {0}, 0.0))[0]
    for k in range(4):  # the first death was not alone (it came from the catalogue): not counted
        out = p.failed(s.ticket, crash_of(0), {0}, float(k))
        if k < 3:
            s = submits(p.schedule({0}, {}, float(k)))[0]
    (rec,) = records(out)
    assert rec.outcome.error_type == "worker_crash" and rec.outcome.stage == "predict"
    assert rec.outcome.track_id == "t5" and rec.content_key == "key5"
    assert "3 times while alone" in rec.outcome.message


def test_a_death_of_another_actor_does_not_count_against_a_track():
    p = policy(window=1)
    s = submits(p.admit(row(0), {0, 1}, 0.0))[0]
    for k in range(5):  # alone on 0 each time, but what died was predictor 1 or a fit worker
        fail = crash_of(1) if k % 2 else Failure(True, "fit", "RayActorError", "x", dead_elsewhere=True)
        p.failed(s.ticket, fail, {0, 1}, float(k))
        s = submits(p.schedule({0}, {}, float(k)))[0]
    assert p.crashes["t0"] == 0


def test_a_raising_track_is_retried_then_recorded_with_its_stage():
    p = policy(max_attempts=3)
    s = submits(p.admit(row(0), {0}, 0.0))[0]
    bug = Failure(False, "fit", "ValueError", "bad value")
    for attempt in (1, 2):
        (s,) = submits(p.failed(s.ticket, bug, {0}, 1.0))
        assert p.inflight[s.ticket].attempt == attempt + 1
    (rec,) = records(p.failed(s.ticket, bug, {0}, 2.0))
    assert (rec.outcome.stage, rec.outcome.error_type, rec.outcome.attempt) == ("fit", "ValueError", 3)
    assert rec.content_key == "key0" and p.drained()


def test_a_stalled_predictor_is_killed_its_tracks_retried_and_twice_is_timeout():
    p = policy(stall_timeout=10.0)
    a = submits(p.admit(row(0), {0}, 0.0))[0]
    b = submits(p.admit(row(1), {0}, 0.0))[0]
    assert p.stalled({0}, {0: Heartbeat("t1", 9.0)}, {}) == []  # still finishing batches
    (kill,) = p.stalled({0}, {0: Heartbeat("t1", 11.0)}, {})
    assert isinstance(kill, Kill) and kill.predictor == 0 and "'t1'" in kill.message
    assert p.stalls == {"t1": 1}
    retried = [submits(p.failed(t.ticket, CRASH, {0}, 12.0))[0] for t in (a, b)]  # our own kill: retried
    assert p.crashes == {}  # a stall kill is not a crash
    on_t1 = next(s for s in retried if s.row["track_id"] == "t1")
    p.stalled({0}, {0: Heartbeat("t1", 11.0)}, {})
    assert p.stalls == {"t1": 2}
    (rec,) = records(p.failed(on_t1.ticket, CRASH, {0}, 30.0))
    assert rec.outcome.error_type == "timeout" and rec.outcome.track_id == "t1"


def test_an_unanswered_heartbeat_is_a_stall_on_the_oldest_track():
    p = policy(stall_timeout=10.0)
    submits(p.admit(row(0), {0}, 5.0))
    submits(p.admit(row(1), {0}, 1.0))
    assert p.stalled({0}, {}, {0: 9.0}) == []
    (kill,) = p.stalled({0}, {}, {0: 10.5})
    assert "'t1'" in kill.message  # the oldest, since it never said which


def test_tracks_of_a_predictor_that_has_not_come_back_move_on_after_the_wait():
    p = policy(orphan_after=10.0)
    s = submits(p.admit(row(0), {0, 1}, 0.0))[0]
    assert s.predictor == 0
    assert p.schedule({1}, {0: 100.0}, 105.0) == []  # not yet
    cmds = p.schedule({1}, {0: 100.0}, 111.0)
    assert cmds[0] == Cancel(s.ticket)
    (moved,) = submits(cmds)
    assert moved.predictor == 1 and moved.row == row(0) and s.ticket not in p.inflight
    # a suspect that was alone on the lost predictor stays a suspect
    p2 = policy(orphan_after=10.0)
    t = submits(p2.admit(row(0), {0}, 0.0))[0]
    p2.failed(t.ticket, crash_of(0), {0}, 1.0)
    alone = submits(p2.schedule({0}, {}, 2.0))[0]
    cmds = p2.schedule({1}, {0: 3.0}, 20.0)
    assert cmds[0] == Cancel(alone.ticket)
    assert submits(cmds)[0].predictor == 1 and p2.inflight[submits(cmds)[0].ticket].alone


def test_every_predictor_failing_to_load_fails_the_run_resumably():
    p = policy()
    assert p.stuck(None) is None
    assert "can load the model" in p.stuck("OSError: weights gone")
    s = submits(p.admit(row(0), {0}, 0.0))[0]
    assert p.stuck("OSError: weights gone") is None  # wait for what is in flight first
    p.done(s.ticket, result(0))
    assert "weights gone" in p.stuck("OSError: weights gone")


def test_content_keys_travel_with_their_rows():
    p = policy()
    tickets = {submits(p.admit(row(i), {0, 1}, 0.0))[0].ticket: i for i in range(6)}
    for t, i in reversed(list(tickets.items())):  # finished in any order
        (rec,) = p.done(t, result(i) if i % 2 else ErrorRecord(f"t{i}", i, "decode", "decode_error", "bad"))
        assert rec.content_key == f"key{i}"
    assert p.drained()


def test_on_interrupt_only_finished_results_are_recorded():
    p = policy()
    a = submits(p.admit(row(0), {0}, 0.0))[0]
    b = submits(p.admit(row(1), {0}, 0.0))[0]
    out = p.interrupted([(a.ticket, result(0)), (b.ticket, RuntimeError("not a result"))])
    assert [r.content_key for r in records(out)] == ["key0"]


@pytest.mark.parametrize("seed", range(20))
def test_random_event_orders_never_lose_or_duplicate_a_row(seed):
    """Random deaths, bugs, stalls, orphans and successes: every row ends exactly once."""
    import random

    rng = random.Random(seed)
    p = policy(window=4, stall_timeout=5.0, orphan_after=3.0)
    rows = [row(i) for i in range(30)]
    feed, ended, now = iter(rows), [], 0.0
    ready, unready = {0, 1, 2}, {}

    def take(cmds):
        ended.extend(
            r.outcome.track["track_id"] if isinstance(r.outcome, TrackResult) else r.outcome.track_id
            for r in records(cmds)
        )

    for _ in range(2000):
        now += 1.0
        take(p.schedule(ready, unready, now))
        while p.has_room(ready):
            r = next(feed, None)
            if r is None:
                break
            take(p.admit(r, ready, now))
        if not p.inflight:
            if p.drained() and next(feed, None) is None:
                break
            ready, unready = {0, 1, 2}, {}
            continue
        ticket = rng.choice(list(p.inflight))
        j = p.inflight[ticket].predictor
        roll = rng.random()
        if roll < 0.5 or p.inflight[ticket].row["track_id"] == "t29" and roll < 0.9:
            take(p.done(ticket, result(p.inflight[ticket].row["catalogue_row"])))
        elif roll < 0.7:
            take(p.failed(ticket, crash_of(j), ready, now))
        elif roll < 0.8:
            take(p.failed(ticket, Failure(False, "fit", "ValueError", "x"), ready, now))
        elif roll < 0.9:
            for k in p.stalled(ready, {j: Heartbeat(None, 0)}, {j: 6.0}):
                assert isinstance(k, Kill)
        else:
            ready = ready - {j}
            unready[j] = now
            if not ready:
                ready, unready = {0, 1, 2}, {}
    assert sorted(ended) == sorted(r["track_id"] for r in rows)


def test_commit_cadence_every_n_rows_or_after_the_seconds(monkeypatch):
    """The writer commits a batch when ``commit_every`` rows wait, or when rows have waited
    ``commit_seconds`` since the last commit; never an empty batch."""
    from pipeline import writer_base
    from pipeline.writer_base import TableWriter

    class Recorder(TableWriter):
        def __init__(self, every, seconds):
            super().__init__("r", "inv", every, seconds, None)
            self.batches = []

        def _commit(self):
            if not self.pending:
                return False
            self.batches.append([t["track_id"] for t in self._tracks] + [e["track_id"] for e in self._errors])
            self._batch_done()
            return True

        def recover(self):
            return 0

        def scan(self, table, columns, batch_rows=16384):
            return iter(())

        def drop_errors(self):
            pass

    clock = [0.0]
    monkeypatch.setattr(writer_base.time, "monotonic", lambda: clock[0])
    w = Recorder(every=3, seconds=10.0)
    for i in range(7):
        (w.add_track({"track_id": f"t{i}"}, None) if i % 2 else w.add_error({"track_id": f"t{i}"}))
        w.maybe_commit()
    assert w.batches == [["t1", "t0", "t2"], ["t3", "t5", "t4"]] and w.pending == 1
    clock[0] = 9.9
    assert not w.maybe_commit()  # one row, not yet due
    clock[0] = 10.1
    assert w.maybe_commit() and w.batches[-1] == ["t6"]
    clock[0] = 30.0
    assert not w.maybe_commit() and not w.commit()  # nothing waits: no empty batch
