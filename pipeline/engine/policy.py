"""The scheduler's rules as plain code: events in, commands out, no Ray.

The loop (:mod:`pipeline.engine.loop`) turns what Ray reports into calls of :class:`Policy`
and carries out the commands it returns; the pool carries out the Ray side. Every rule that
keeps a guarantee lives here, where a unit test drives it in milliseconds:

- a track whose predictor died is retried *alone* on a predictor (preferably another one);
  only deaths while alone on its own predictor count against it, and ``crashes_alone`` of
  them make it ``worker_crash`` (a neighbour of a poison track is never blamed);
- a predictor that finishes no model batch for ``stall_timeout`` is killed and its tracks
  retried; the track it stalled on twice is recorded as ``timeout``;
- tracks held by a predictor that has not come back for ``orphan_after`` move on;
- a track that raises is retried up to ``max_attempts`` times, then recorded;
- at most ``window(ready predictors)`` tracks are in flight, started in groups of
  ``group`` (tracks a predictor separates together);
- when nothing can run and no predictor can load the model, the run fails (resumably).

Work in flight is named by a *ticket* (an int the policy hands out); each in-flight row
carries its own content key to the table rows it becomes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from musiclime.records import ErrorRecord, TrackResult
from pipeline.engine.faults import Failure

Row = dict[str, Any]  # one catalogue row as the plan yields it (track_id, catalogue_row, content_key, ...)
TrackOutcome = TrackResult | ErrorRecord


@dataclass(frozen=True)
class Submit:
    """Run ``row`` through the stages on predictor ``predictor``; its result comes back
    under ``ticket``."""

    ticket: int
    row: Row
    predictor: int


@dataclass(frozen=True)
class Record:
    """Write ``outcome`` (a track's result or its error) with the row's content key."""

    outcome: TrackOutcome
    content_key: str | None


@dataclass(frozen=True)
class Cancel:
    """Forget ``ticket`` (its row moved on); a result that still comes is never read."""

    ticket: int


@dataclass(frozen=True)
class Kill:
    """Kill predictor ``predictor`` (Ray restarts it) and probe it until it answers again."""

    predictor: int
    message: str


@dataclass(frozen=True)
class Probe:
    """Stop routing to ``predictor`` until it answers again (it died)."""

    predictor: int


Command = Submit | Record | Cancel | Kill | Probe


@dataclass(frozen=True)
class Limits:
    """The numbers the rules use (from the run's settings)."""

    window: Callable[[int], int]  # ready predictors -> tracks in flight at most
    max_attempts: int = 3
    stall_timeout: float = 1800.0
    crashes_alone: int = 3  # deaths alone on its predictor that make a track worker_crash
    orphan_after: float = 10.0  # seconds a predictor may stay away before its tracks move on
    group: int = 1  # rows start in groups this big (--separation-batch): see Policy.room


@dataclass
class Flight:
    row: Row
    attempt: int
    predictor: int
    since: float
    alone: bool = False


@dataclass(frozen=True)
class Heartbeat:
    """What a predictor said of itself: the track it is on (None: idle) and the seconds
    since it last finished a model batch."""

    track_id: str | None
    idle_s: float


@dataclass
class Policy:
    limits: Limits
    inflight: dict[int, Flight] = field(default_factory=dict)
    crashes: dict[str, int] = field(default_factory=dict)  # track id -> deaths while alone on its predictor
    died_on: dict[str, int] = field(default_factory=dict)  # track id -> predictor it last died on
    suspects: list[tuple[Row, int]] = field(default_factory=list)  # (row, attempt): retried alone
    waiting: list[tuple[Row, int]] = field(default_factory=list)  # (row, attempt): no predictor was ready
    reserved: dict[int, int] = field(default_factory=dict)  # predictor -> ticket of the suspect alone on it
    stalls: dict[str, int] = field(default_factory=dict)  # track id -> times a predictor stalled on it
    stall_killed: set[int] = field(default_factory=set)  # tickets failed by our own kill of a stalled predictor
    timed_out: set[int] = field(default_factory=set)  # tickets to record as timeout when they fail
    _next_ticket: int = 0

    # -- what the loop asks ------------------------------------------------------------
    def busy(self) -> set[int]:
        """Predictors with work in flight."""
        return {f.predictor for f in self.inflight.values()}

    def load(self, predictor: int) -> int:
        return sum(1 for f in self.inflight.values() if f.predictor == predictor)

    def has_room(self, ready: Set[int]) -> bool:
        """May a new catalogue row start? Not while suspects or retries queue, nor when every
        ready predictor runs a suspect alone."""
        return (
            len(self.inflight) < self.limits.window(len(ready))
            and not self.suspects
            and not self.waiting
            and len(set(ready) - set(self.reserved)) > 0
        )

    def room(self, ready: Set[int]) -> int:
        """How many new catalogue rows may start now: the free part of the window, but none
        until a whole group fits (``Limits.group``; the window if it is smaller), so the
        rows sent to a predictor together can be separated together."""
        if not self.has_room(ready):
            return 0
        window = self.limits.window(len(ready))
        free = window - len(self.inflight)
        return free if free >= min(self.limits.group, window) else 0

    def drained(self) -> bool:
        """Nothing in flight or queued: the run is over once the catalogue is."""
        return not self.inflight and not self.suspects and not self.waiting

    def stuck(self, unusable: str | None) -> str | None:
        """Why the run must fail now: nothing is in flight and no predictor can ever load the
        model again (each one's constructor failed); None while work can go on."""
        if not self.inflight and unusable:
            return f"no GPU-stage actor can load the model any more: {unusable}"
        return None

    # -- events ------------------------------------------------------------------------
    def admit(self, row: Row, ready: Set[int], now: float) -> list[Command]:
        """A new catalogue row."""
        return self._submit(row, 1, ready, now)

    def schedule(self, ready: Set[int], unready_since: Mapping[int, float], now: float) -> list[Command]:
        """Between events: move orphans on, restart waiting rows, place suspects."""
        out = self._rescue_orphans(ready, unready_since, now)
        while self.waiting and ready:
            out += self._submit(*self.waiting.pop(0), ready, now)
        if self.suspects:
            out += self._place_suspects(ready, now)
        return out

    def done(self, ticket: int, outcome: TrackOutcome) -> list[Command]:
        """A ticket's stages returned (a result, or an error row such as decode_error)."""
        flight = self._land(ticket)
        self.stall_killed.discard(ticket)
        self.timed_out.discard(ticket)
        return [Record(outcome, _key(flight.row))]

    def failed(self, ticket: int, failure: Failure, ready: Set[int], now: float) -> list[Command]:
        """A ticket's stages raised."""
        flight = self._land(ticket)
        row, attempt, tid = flight.row, flight.attempt, flight.row["track_id"]
        if ticket in self.timed_out:
            self.timed_out.discard(ticket)
            return [
                self._error(
                    row,
                    "predict",
                    "timeout",
                    f"track {tid!r} stalled its predictor twice (no model "
                    f"batch finished for {self.limits.stall_timeout:g} s)",
                    attempt,
                )
            ]
        if ticket in self.stall_killed:  # our own kill: retry, the stall is counted already
            self.stall_killed.discard(ticket)
            return self._submit(row, attempt, ready, now)
        if failure.infrastructure:
            return self._infrastructure(flight, failure, ready)
        if attempt < self.limits.max_attempts:  # a bug or a flaky model: retry, then record
            return self._submit(row, attempt + 1, ready, now)
        return [
            self._error(
                row,
                failure.stage,
                failure.error_type,
                f"track {tid!r} failed {attempt} times: {failure.message[:500]}",
                attempt,
            )
        ]

    def stalled(
        self, ready: Set[int], beats: Mapping[int, Heartbeat], unanswered: Mapping[int, float]
    ) -> list[Command]:
        """A predictor is stalled when it is on a track and has finished no model batch for
        ``stall_timeout`` (a long track that keeps finishing batches is not; time waiting for
        a decode or in the fit does not count), or when its heartbeat has gone unanswered that
        long (the whole process is stuck). It is killed and its tracks retried."""
        out: list[Command] = []
        limit = self.limits.stall_timeout
        for j in sorted(self.busy() & set(ready)):
            beat = beats.get(j)
            if not (
                (beat is not None and beat.track_id is not None and beat.idle_s > limit)
                or unanswered.get(j, 0.0) > limit
            ):
                continue
            mine = [t for t, f in self.inflight.items() if f.predictor == j]
            # the track it is on, as its heartbeat said (a threaded actor need not run its
            # calls in order); the oldest of its tracks when it never answered
            on = beat.track_id if beat else None
            stuck = next((t for t in mine if self.inflight[t].row["track_id"] == on), None) or min(
                mine, key=lambda t: self.inflight[t].since
            )
            tid = self.inflight[stuck].row["track_id"]
            self.stalls[tid] = self.stalls.get(tid, 0) + 1
            if self.stalls[tid] >= 2:
                self.timed_out.add(stuck)
            self.stall_killed.update(mine)
            out.append(
                Kill(
                    j,
                    f"predictor {j} finished no model batch for {limit:g} s on track {tid!r}: "
                    f"replacing it and retrying its {len(mine)} track(s)",
                )
            )
        return out

    def interrupted(self, finished: Iterable[tuple[int, object]]) -> list[Command]:
        """On SIGINT/SIGTERM: record what already finished (tickets with their values)."""
        return [
            c for t, value in finished if isinstance(value, (TrackResult, ErrorRecord)) for c in self.done(t, value)
        ]

    # -- the rules' parts --------------------------------------------------------------
    def _submit(
        self, row: Row, attempt: int, ready: Set[int], now: float, predictor: int | None = None
    ) -> list[Command]:
        if predictor is None and not ready:  # every predictor is restarting: wait for one
            self.waiting.append((row, attempt))
            return []
        if predictor is None:
            free = [j for j in sorted(ready) if j not in self.reserved] or sorted(ready)
            predictor = min(free, key=self.load)
        ticket, self._next_ticket = self._next_ticket, self._next_ticket + 1
        self.inflight[ticket] = Flight(row, attempt, predictor, now)
        return [Submit(ticket, row, predictor)]

    def _submit_alone(self, row: Row, attempt: int, predictor: int, now: float) -> list[Command]:
        out = self._submit(row, attempt, {predictor}, now, predictor=predictor)
        ticket = out[0].ticket  # type: ignore[union-attr]
        self.inflight[ticket].alone = True
        self.reserved[predictor] = ticket
        return out

    def _land(self, ticket: int) -> Flight:
        flight = self.inflight.pop(ticket)
        if self.reserved.get(flight.predictor) == ticket:
            del self.reserved[flight.predictor]
        return flight

    def _infrastructure(self, flight: Flight, failure: Failure, ready: Set[int]) -> list[Command]:
        """A dead actor, worker or node is not the track's fault: the track is retried alone
        on a predictor, so that a death then is its own. Only the death of its own predictor
        (or of a worker that ran its task) counts; a fit actor killed beside it does not."""
        row, tid = flight.row, flight.row["track_id"]
        out: list[Command] = []
        if failure.dead_predictor is not None and failure.dead_predictor in ready:
            out.append(Probe(failure.dead_predictor))  # routed to again once it is back
        own = failure.dead_predictor == flight.predictor or (
            failure.dead_predictor is None and not failure.dead_elsewhere
        )
        self.crashes[tid] = self.crashes.get(tid, 0) + int(flight.alone and own)
        self.died_on[tid] = flight.predictor
        if self.crashes[tid] < self.limits.crashes_alone:
            self.suspects.append((row, flight.attempt))
            return out
        return out + [
            self._error(
                row,
                failure.stage,
                "worker_crash",
                f"track {tid!r} took its worker down {self.crashes[tid]} times while alone on it: "
                f"{failure.message[:300]}",
                flight.attempt,
            )
        ]

    def _rescue_orphans(self, ready: Set[int], unready_since: Mapping[int, float], now: float) -> list[Command]:
        """Tracks sent to a predictor just as it died wait for its restart, which may never
        come (its node is gone and nothing else has room): after ``orphan_after`` they move
        to a ready predictor. Their old calls are cancelled and never read."""
        out: list[Command] = []
        for ticket, flight in list(self.inflight.items()):
            since = unready_since.get(flight.predictor)
            if since is None or now - since < self.limits.orphan_after or not ready:
                continue
            self._land(ticket)
            out.append(Cancel(ticket))
            if flight.alone:
                self.suspects.append((flight.row, flight.attempt))
            else:
                out += self._submit(flight.row, flight.attempt, ready, now)
        return out

    def _place_suspects(self, ready: Set[int], now: float) -> list[Command]:
        """Each suspect runs alone, on another predictor than the one it died on while one is
        free or may become free: a killer of one actor is then not mistaken for a poison
        track (a poison track kills whichever predictor it lands on)."""
        out: list[Command] = []
        busy = self.busy()
        for row, attempt in list(self.suspects):
            free = [j for j in sorted(ready) if j not in busy and j not in self.reserved]
            other = [j for j in free if j != self.died_on.get(row["track_id"])]
            j = other[0] if other else (free[0] if free and not busy and not self.reserved else None)
            if j is None:
                continue
            self.suspects.remove((row, attempt))
            out += self._submit_alone(row, attempt, j, now)
            busy.add(j)
        return out

    @staticmethod
    def _error(row: Row, stage: str, error_type: str, message: str, attempt: int) -> Record:
        return Record(
            ErrorRecord(row["track_id"], row["catalogue_row"], stage, error_type, message, attempt), _key(row)
        )


def _key(row: Row) -> str | None:
    return row.get("content_key")
