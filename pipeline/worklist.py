"""Which catalogue rows a run still has to do, matched by ``track_id``, in bounded memory.

Two streaming passes over the catalogue. The first keeps one 16-byte digest of each row's
``track_id`` (16 MB per million rows, not the rows): duplicates are found by sorting the
digests, committed rows by looking them up in the digests of this run's ``tracks`` and
``errors``. The second pass yields the rows still to do. Matching by id, not position,
lets a resume see rows inserted or appended to the catalogue: new rows are explained,
committed ones never recomputed.

Each row also gets a content key (:func:`pipeline.catalogue.content_keys`), computed per
batch and not kept: an incremental night (``history``) counts a row as done when an earlier
run under the same model and config committed its (track_id, content key), so unchanged
tracks are not explained again and new and changed ones are; the second pass attaches the
key to the rows it yields (``content_key``).

Rows without an identity of their own (no ``track_id``, a repeated ``track_id``, a row
that could not be decoded and has no id) are counted per (track_id, error type): the
k-th such row is written to ``errors`` once, whatever the number of resumes.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from musiclime.records import ErrorRecord
from pipeline.catalogue import DECODE_ERROR, CatalogueError, CatalogueReader, ContentKeys

DIGEST = np.dtype("S16")
ANONYMOUS = ("missing_track_id", "duplicate_track_id")


def digest(track_id: str) -> bytes:
    """The id's 16-byte blake2b digest, as an ``S16`` array element reads back: numpy drops
    trailing NUL bytes (1 digest in 256 ends with one), so they are dropped here too; with
    every digest 16 bytes long before, this stays one-to-one."""
    return hashlib.blake2b(track_id.encode("utf-8", "surrogatepass"), digest_size=16).digest().rstrip(b"\0")


def _digests(ids) -> np.ndarray:
    return np.array([digest(t) for t in ids], dtype=DIGEST)


def version_digest(track_id: str, content_key: str | None) -> bytes:
    """One digest per (track, content): what an incremental night looks up."""
    return digest(f"{track_id}\0{content_key or ''}")


@dataclass
class Worklist:
    """Per catalogue row (in order): its id digest, whether it is the first row of its id,
    whether it could not be decoded, and whether it is already committed."""
    digests: np.ndarray          # S16 [n_rows]; b"" for rows without an id
    first: np.ndarray            # bool [n_rows]
    bad: np.ndarray              # bool [n_rows]: catalogue_decode_error
    done: np.ndarray             # bool [n_rows]: the id is in tracks or errors already
    anonymous_done: Counter = field(default_factory=Counter)   # (track_id, error_type) -> committed
    unchanged: np.ndarray | None = None  # bool [n_rows]: explained (or failed) by an earlier night as it is

    @property
    def n_unchanged(self) -> int:
        return int(self.unchanged.sum()) if self.unchanged is not None else 0

    @property
    def n_rows(self) -> int:
        return len(self.digests)

    @property
    def n_done(self) -> int:
        return int(self.done.sum())

    @property
    def n_work(self) -> int:
        """Rows that need the model."""
        return int((self.first & ~self.done & ~self.bad).sum())


def committed(writer) -> tuple[np.ndarray, np.ndarray, Counter]:
    """Digests of the ids in this run's ``tracks``, in its ``errors`` (rows with an identity),
    and the counts of committed anonymous error rows."""
    ok = [_digests(b["track_id"]) for b in writer.scan("tracks", ["track_id"])]
    err: list = []
    anonymous: Counter = Counter()
    for b in writer.scan("errors", ["track_id", "error_type"]):
        keyed = []
        for tid, et in zip(b["track_id"], b["error_type"]):
            if not tid or et in ANONYMOUS:
                anonymous[(tid or "", et)] += 1
            else:
                keyed.append(tid)
        err.append(_digests(keyed))
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, DIGEST)  # noqa: E731
    return cat(ok), cat(err), anonymous


class _Index:
    """The catalogue's digests sorted once (stable: equal ids keep row order), for
    first-occurrence and membership queries without full-size temporaries."""

    def __init__(self, digests: np.ndarray):
        self.order = np.argsort(digests, kind="stable")
        self.sorted = digests[self.order]

    def first_rows(self) -> np.ndarray:
        """bool [n_rows]: the first row of each id (rows without an id excluded)."""
        n = len(self.sorted)
        first = np.zeros(n, bool)
        if n:
            new = np.ones(n, bool)
            new[1:] = self.sorted[1:] != self.sorted[:-1]
            new &= self.sorted != b""
            first[self.order[new]] = True
        return first

    def first_rows_of(self, query: np.ndarray) -> np.ndarray:
        """Row indices of the first row of each queried id present in the catalogue."""
        if not len(query) or not len(self.sorted):
            return np.zeros(0, np.int64)
        pos = np.minimum(np.searchsorted(self.sorted, query), len(self.sorted) - 1)
        hit = self.sorted[pos] == query
        return self.order[pos[hit]]  # leftmost of an equal run = the first row (stable sort)


NO_LABEL_AUDIO = ContentKeys()  # the keys of a run with no label column, of an audio model


def make_worklist(reader: CatalogueReader, writer, history: np.ndarray | None = None, members=None,
              keys_of: ContentKeys = NO_LABEL_AUDIO) -> Worklist:
    """The plan of a run. ``history``: sorted :func:`version_digest` values of earlier
    nights (incremental runs); ``members``: an object whose ``add(track_ids, rows, keys)``
    receives each catalogue batch (the run's ``members`` table); ``keys_of``: the run's
    content keys."""
    chunks, bad_chunks, seen_chunks = [], [], []
    for batch in reader.batches():
        keys = keys_of(batch) if history is not None or members is not None else None
        chunks.append(np.array([digest(r["track_id"]) if r["track_id"] else b"" for r in batch], dtype=DIGEST))
        bad_chunks.append(np.array([DECODE_ERROR in r for r in batch], dtype=bool))
        if history is not None:
            seen_chunks.append(_in_sorted(history, np.array(
                [version_digest(r["track_id"], k) if r["track_id"] else b"" for r, k in zip(batch, keys or [])],
                dtype=DIGEST)))
        if members is not None:
            members.add([r["track_id"] for r in batch], [r["catalogue_row"] for r in batch], keys)
    digests = np.concatenate(chunks) if chunks else np.zeros(0, DIGEST)
    del chunks
    bad = np.concatenate(bad_chunks) if bad_chunks else np.zeros(0, bool)
    index = _Index(digests)
    first = index.first_rows()
    ok, err, anonymous = committed(writer)
    done = np.zeros(len(digests), bool)
    done[index.first_rows_of(ok)] = True
    done[index.first_rows_of(err)] = True
    unchanged = None
    if history is not None:
        unchanged = (np.concatenate(seen_chunks) if seen_chunks else np.zeros(0, bool)) & first & ~done & ~bad
        done |= unchanged
    return Worklist(digests, first, bad, done, anonymous, unchanged)


def _in_sorted(sorted_digests: np.ndarray, query: np.ndarray) -> np.ndarray:
    if not len(sorted_digests) or not len(query):
        return np.zeros(len(query), bool)
    pos = np.minimum(np.searchsorted(sorted_digests, query), len(sorted_digests) - 1)
    return (sorted_digests[pos] == query) & (query != b"")


def rows_to_do(reader: CatalogueReader, plan: Worklist, keys_of: ContentKeys = NO_LABEL_AUDIO) -> Iterator[dict | ErrorRecord]:
    """The second pass: rows for the model, and error records for rows that cannot be
    explained and are not committed yet, each with its content key."""
    seen: Counter = Counter()
    for batch in reader.batches():
        for r, ckey in zip(batch, keys_of(batch)):
            r["content_key"] = ckey
            i, tid = r["catalogue_row"], r["track_id"]
            if i >= plan.n_rows or plan.digests[i] != (digest(tid) if tid else b""):
                # rows appended are left for the next run; rows changed in place are not
                if i >= plan.n_rows:
                    return
                raise CatalogueError(f"the catalogue changed while the run read it (row {i}); rerun to resume")
            if plan.first[i]:
                if plan.done[i]:
                    continue
                if plan.bad[i]:
                    yield ErrorRecord(tid, i, "catalogue", "catalogue_decode_error",
                                      f"track {tid!r} (catalogue row {i}): {r[DECODE_ERROR]}", content_key=ckey)
                else:
                    yield r
                continue
            if tid is None:
                kind = "catalogue_decode_error" if DECODE_ERROR in r else "missing_track_id"
                message = (f"catalogue row {i}: {r[DECODE_ERROR]}" if DECODE_ERROR in r
                           else f"catalogue row {i} has no track_id")
            else:
                kind = "duplicate_track_id"
                message = f"track {tid!r} (row {i}) repeats an earlier row; the first is explained"
            key = (tid or "", kind)
            seen[key] += 1
            if seen[key] > plan.anonymous_done[key]:
                yield ErrorRecord(tid or "", i, "validate" if kind != "catalogue_decode_error" else "catalogue",
                                  kind, message, content_key=ckey)


@dataclass
class Tally:
    explained: int
    failed: int
    unaccounted: int


def outcome(plan: Worklist, writer) -> Tally:
    """Where every catalogue row ended, from the committed tables alone (so a resumed run
    reports what an uninterrupted one would)."""
    ok, err, anonymous = committed(writer)
    index = _Index(plan.digests)
    in_ok = np.zeros(plan.n_rows, bool)
    in_ok[index.first_rows_of(ok)] = True
    in_err = np.zeros(plan.n_rows, bool)
    in_err[index.first_rows_of(err)] = True
    in_err &= ~in_ok
    del index
    expected: Counter = Counter()
    # the anonymous rows of the catalogue, recounted as rows_to_do counts them
    for i in np.flatnonzero(~plan.first):
        kind = ("catalogue_decode_error" if plan.bad[i] else "missing_track_id") if plan.digests[i] == b"" \
            else "duplicate_track_id"
        expected[(bool(plan.digests[i]), kind)] += 1
    have: Counter = Counter()
    for (tid, kind), n in anonymous.items():
        have[(bool(tid), kind)] += n
    anon_failed = sum(min(n, have[k]) for k, n in expected.items())
    anon_missing = sum(max(0, n - have[k]) for k, n in expected.items())
    missing = plan.first & ~in_ok & ~in_err
    if plan.unchanged is not None:
        missing &= ~plan.unchanged
    return Tally(int(in_ok.sum()), int(in_err.sum()) + anon_failed, int(missing.sum()) + anon_missing)
