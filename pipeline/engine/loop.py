"""The explain job's event loop: rows from the plan, events from the pool, rules from the
policy, rows to the writer. Every decision is the policy's; this file only carries them out."""

from __future__ import annotations

import time
from collections.abc import Iterable

from musiclime.records import ErrorRecord, TrackResult
from pipeline import logs
from pipeline.engine.policy import Cancel, Command, Kill, Limits, Policy, Probe, Record, Submit


def limits_of(cfg) -> Limits:
    """The policy's numbers from the run's settings (the others are the policy's own)."""
    return Limits(
        window=cfg.in_flight,
        max_attempts=cfg.max_attempts,
        stall_timeout=cfg.stall_timeout,
        group=cfg.tracks_per_separation,
    )


class Loop:
    """Feeds rows to the pool with the policy's window; error rows from the plan go straight
    to the writer. ``items`` is a stream: the driver never holds the catalogue."""

    def __init__(self, pool, policy: Policy, writer, summary, bar=None):
        self.pool, self.policy, self.writer, self.summary, self.bar = pool, policy, writer, summary, bar
        self.refs: dict = {}  # ref -> ticket, while in flight
        self.tickets: dict = {}  # ticket -> ref
        self.ok = self.failed = 0
        self.t0 = time.perf_counter()

    def run(self, items: Iterable) -> None:
        try:
            if self.pool is None:  # nothing for the model: only rows whose catalogue cells failed
                for item in items:
                    self._record(Record(item, item.content_key))
                return
            self._run(iter(items))
        except KeyboardInterrupt:
            self._collect_finished()  # keep what already finished, waiting for nothing more
            raise
        finally:
            if self.bar:
                self.bar.close()

    def _run(self, items) -> None:
        pool, policy = self.pool, self.policy
        exhausted = False
        while True:
            pool.poll()
            self._do(policy.schedule(pool.ready, pool.unready_since, time.monotonic()))
            room, admitted = (0 if exhausted else policy.room(pool.ready)), []
            while room > 0:  # one round: its rows go out together, grouped per predictor
                item = next(items, None)
                if item is None:
                    exhausted = True
                    break
                if isinstance(item, ErrorRecord):
                    self._record(Record(item, item.content_key))
                    continue
                admitted += policy.admit(item, pool.ready, time.monotonic())
                room -= 1
            self._do(admitted)
            if not policy.inflight:
                if exhausted and policy.drained():
                    return
                why = policy.stuck(pool.unusable_pool())
                if why:  # rows would wait forever: fail, resumable once the model loads again
                    raise RuntimeError(why)
                pool.poll(timeout=1.0)  # no predictor ready (all restarting or not placed yet): wait
                continue
            beats, unanswered = pool.heartbeats(policy.busy())
            self._do(policy.stalled(pool.ready, beats, unanswered))
            # a timeout so SIGINT/SIGTERM reach the driver between waits
            ready, _ = pool.ray.wait(list(self.refs), num_returns=1, timeout=1.0)
            if ready:
                self._finish(ready[0])

    def _finish(self, ref) -> None:
        ticket = self.refs.pop(ref)
        del self.tickets[ticket]
        try:
            value = self.pool.ray.get(ref)
        except Exception as e:
            self._do(self.policy.failed(ticket, self.pool.classify(e), self.pool.ready, time.monotonic()))
        else:
            self._do(self.policy.done(ticket, value))
        self._progress()

    def _progress(self) -> None:
        """The progress line after each finished call (a result, an error row or a retry)."""
        if self.bar:
            seconds = max(time.perf_counter() - self.t0, 1e-9)
            rate = self.summary.model_rows / seconds
            busy = self.pool.busy_share()
            # --window whole: each mask is heard in several windows, the cost that counts
            windows = self.summary.window_rows
            heard = f" ({windows / seconds:.0f} model windows/s)" if windows > self.summary.model_rows else ""
            self.bar.update(
                self.ok,
                self.failed,
                extra=f"{rate:.0f} masks/s{heard}, {len(self.pool.ready)} GPU-stage "
                f"actor(s)" + ("" if busy is None else f" {busy:.0%} busy"),
            )

    def _do(self, commands: list[Command]) -> None:
        submits: dict[int, list[Submit]] = {}  # per predictor, in order: sent together at the end
        for c in commands:
            if isinstance(c, Submit):
                submits.setdefault(c.predictor, []).append(c)
            elif isinstance(c, Record):
                self._record(c)
            elif isinstance(c, Cancel):
                ref = self.tickets.pop(c.ticket)
                del self.refs[ref]
                self.pool.cancel(ref)
            elif isinstance(c, Kill):
                logs.get("explain").warning(c.message)
                self.pool.kill(c.predictor)
            elif isinstance(c, Probe):
                self.pool.probe(c.predictor)
            else:  # pragma: no cover - a command this loop does not know is a bug
                raise TypeError(f"unknown command {c!r}")
        for predictor, group in submits.items():
            refs = self.pool.submit(predictor, [c.row for c in group], self.policy.limits.group)
            for c, ref in zip(group, refs):
                self.refs[ref], self.tickets[c.ticket] = c.ticket, ref

    def _record(self, c: Record) -> None:
        res, writer = c.outcome, self.writer
        if isinstance(res, TrackResult):
            res.track["content_key"] = c.content_key
            writer.add_track(res.track, res.explanations)
            self.summary.model_rows += res.model_rows
            self.summary.window_rows += res.model_rows * int(res.track.get("windows") or 1)
            self.summary.computed += 1
            self.ok += 1
        else:
            row = res.row(writer.invocation_id)
            row["content_key"] = c.content_key
            writer.add_error(row)
            self.summary.errors.append(res)
            self.failed += 1
        writer.maybe_commit()

    def _collect_finished(self) -> None:
        if not self.refs:
            return
        done, _ = self.pool.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=0)
        finished = []
        for ref in done:
            try:
                finished.append((self.refs[ref], self.pool.ray.get(ref, timeout=0)))
            except Exception:
                continue
        self._do(self.policy.interrupted(finished))


def drive(pool, cfg, items: Iterable, writer, summary, bar=None) -> None:
    """Run ``items`` through ``pool`` under the policy built from ``cfg``."""
    Loop(pool, Policy(limits_of(cfg)), writer, summary, bar).run(items)
