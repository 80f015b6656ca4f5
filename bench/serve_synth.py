"""A synthetic output laid out exactly as ``musiclime explain`` writes it, without explaining:
``tracks``, ``explanations``, ``errors`` and ``members`` in files of 64 tracks under
``run_id=`` partitions, ``runs/<run>.json`` and ``run.json``; several nights, each later one
re-explaining a share of the catalogue (changed tracks) and failing a few.

The tables follow this release's schemas (``schemas.tables``): 4 stems x 10 segments and 20
words per track (60 features), one explained label of 10 classes, tags from small
vocabularies. ``fmt="delta"`` turns the Parquet layout into Delta tables in place
(``deltalake.convert_to_deltalake``: the same files, one commit); small outputs may instead
go through the product's own writers (``writers=True``, any store).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CLASSES = ["ambient", "blues", "classical", "country", "electronic", "folk", "hiphop", "jazz", "metal", "rock"]
STEMS = ("vocals", "drums", "bass", "other")
SEGMENTS = 10
WORDS = ("night fire river storm heart road dance blue gold rain city dream light shadow home train moon "
         "ocean wild silver").split()
ADJ = "red quiet lost golden broken electric velvet hollow bright distant".split()
PER_FILE = 64
MODEL_ID = "5e" * 32


def track_id(i: int) -> str:
    return f"trk-{i:07d}"


def _batch(ids: np.ndarray, night: int, rng: np.random.Generator, invocation: str) -> tuple[pa.Table, pa.Table]:
    """The tracks and explanations rows of one commit of ``ids`` (catalogue rows)."""
    from schemas.tables import EXPLANATIONS, TRACKS
    n = len(ids)
    tids = [track_id(int(i)) for i in ids]
    logits = rng.normal(0, 2, (n, len(CLASSES)))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pred = probs.argmax(1)
    words = [" ".join(rng.choice(WORDS, 20)) for _ in range(n)]
    tracks = {
        "track_id": tids, "catalogue_row": ids.astype(np.int64), "seed": rng.integers(-2**62, 2**62, n),
        "predicted": [CLASSES[k] for k in pred], "probabilities": probs.tolist(),
        "true_label": [CLASSES[(int(i) * 7) % len(CLASSES)] for i in ids],
        "explained_labels": [[CLASSES[k]] for k in pred], "score": rng.uniform(0.3, 0.9, n),
        "n_samples": np.full(n, 1000, np.int32), "model_rows": np.full(n, 1000, np.int32),
        "design": ["foldover"] * n, "target": ["log_odds"] * n, "topk_resolved": rng.random(n) < 0.6,
        "n_features": np.full(n, 60, np.int32), "n_audio_features": np.full(n, 40, np.int32),
        "n_lyrics_features": np.full(n, 20, np.int32), "duration_s": np.full(n, 10.0), "modality": ["both"] * n,
        "separator": ["demucs"] * n, "model_id": [MODEL_ID] * n, "config_hash": ["c0" * 16] * n, "status": ["ok"] * n,
        "flags": [[] for _ in range(n)], "invocation_id": [invocation] * n,
        "content_key": [f"{(int(i) * 2654435761 + night * 97) % 2**64:032x}" for i in ids],
        "title": [f"{ADJ[int(i) % 10].title()} {WORDS[int(i) // 10 % 20].title()} {int(i)}" for i in ids],
        "artist": [f"Artist {int(i) % 50000}" for i in ids], "album": [f"Album {int(i) % 120000}" for i in ids],
        "lyrics_source": ["catalogue"] * n, "windows": np.ones(n, np.int32), "window_start_s": np.zeros(n),
        "lyrics": words,
    }
    t = pa.table({k: pa.array(v, TRACKS.field(k).type) for k, v in tracks.items()})
    t = pa.table([t.column(f.name) if f.name in t.column_names else pa.nulls(n, f.type) for f in TRACKS],
                 schema=TRACKS)
    k = 60
    audio = [f"{s}@{g}" for g in range(SEGMENTS) for s in STEMS]
    weight = rng.normal(0, 0.01, (n, k))
    rank = np.argsort(np.argsort(-np.abs(weight), 1), 1) + 1
    feats = np.array(audio + WORDS, dtype=object)
    rows = n * k
    is_audio = np.tile(np.arange(k) < 40, n)
    seg = np.tile(np.array([g for g in range(SEGMENTS) for _ in STEMS] + [0] * 20), n)
    e = {
        "track_id": np.repeat(np.array(tids, dtype=object), k), "label": np.repeat([CLASSES[p] for p in pred], k),
        "label_index": np.repeat(pred.astype(np.int32), k), "modality": np.where(is_audio, "audio", "lyrics"),
        "feature": np.tile(feats, n),
        "stem": np.where(is_audio, np.tile(np.array([s for _ in range(SEGMENTS) for s in STEMS] + [""] * 20,
                                                    dtype=object), n), None),
        "segment": np.where(is_audio, seg, -1), "weight": weight.ravel(),
        "weight_se": np.abs(rng.normal(0.003, 0.001, rows)), "rank": rank.ravel().astype(np.int32),
        "token": np.where(is_audio, None, np.tile(feats, n)),
        "token_index": np.where(is_audio, -1, np.tile(np.arange(k) - 40, n)),
    }
    cols = []
    for f in EXPLANATIONS:
        if f.name in e:
            v = e[f.name]
            if f.name in ("segment", "token_index"):
                arr = pa.array(v, pa.int32(), mask=(v < 0))
            elif f.name == "stem":
                arr = pa.array([None if (x is None or x == "") else x for x in v], pa.string())
            else:
                arr = pa.array(v, f.type)
            cols.append(arr)
        elif f.name in ("start_s", "end_s"):
            start = np.where(is_audio, seg * 1.0 + (1.0 if f.name == "end_s" else 0.0), np.nan)
            cols.append(pa.array(start, pa.float64(), mask=~is_audio))
        else:
            cols.append(pa.nulls(rows, f.type))
    return t, pa.table(cols, schema=EXPLANATIONS)


def _errors(ids: np.ndarray, invocation: str) -> pa.Table:
    from schemas.tables import ERRORS
    kinds = ["decode_error", "missing_file", "too_short", "silent_audio"]
    return pa.Table.from_pylist([dict(track_id=track_id(int(i)), catalogue_row=int(i), stage="decode",
                                      error_type=kinds[int(i) % 4], message=f"track {track_id(int(i))!r}: synthetic",
                                      attempt=1, invocation_id=invocation, content_key=f"{int(i):032x}")
                                 for i in ids], schema=ERRORS)


def nights(n_tracks: int, n_nights: int, changed: float, failed: float, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per night, (rows explained, rows failed): the first explains every row; each later one
    a random ``changed`` share (a few of which fail)."""
    rng = np.random.default_rng(seed)
    out = []
    for night in range(n_nights):
        rows = np.arange(n_tracks) if night == 0 else np.sort(rng.choice(n_tracks, int(n_tracks * changed), False))
        bad = rng.random(len(rows)) < failed
        out.append((rows[~bad], rows[bad]))
    return out


def write_synthetic(out: str | Path, n_tracks: int, n_nights: int = 3, changed: float = 0.05, failed: float = 0.002,
                    fmt: str = "parquet", seed: int = 0, writers: bool = False) -> dict:
    """Write the output; returns what it holds (rows per night, files, bytes)."""
    rng = np.random.default_rng(seed + 1)
    plan = nights(n_tracks, n_nights, changed, failed, seed)
    runs = [f"night-{k + 1}" for k in range(n_nights)]
    docs = []
    for k, (run, (ok, bad)) in enumerate(zip(runs, plan)):
        inv = f"inv{k}"
        if writers:
            _through_writers(str(out), fmt, run, inv, ok, bad, k, rng)
        else:
            _direct(Path(out), run, inv, ok, bad, k, rng)
        docs.append({"run_id": run, "status": "finished", "format": fmt, "classes": CLASSES, "model_id": MODEL_ID,
                     "config_hash": "c0" * 16, "sample_rate": 16000, "started": f"2026-12-0{k + 1}T02:00:00+0000",
                     "rows": {"explained": len(ok), "errors": len(bad)}})
    from musiclime import storage
    for d in docs:
        storage.write_atomic(storage.join(str(out), f"runs/{d['run_id']}.json"), json.dumps(d).encode())
    storage.write_atomic(storage.join(str(out), "run.json"), json.dumps(docs[-1]).encode())
    if fmt == "delta" and not writers:
        from deltalake import Schema, convert_to_deltalake
        for table in ("tracks", "explanations", "errors", "members"):
            if (Path(out) / table).is_dir():
                convert_to_deltalake(str(Path(out) / table), partition_by=Schema.from_arrow(pa.schema([("run_id", pa.string())])),
                                     partition_strategy="hive")
    return {"nights": {r: {"explained": len(ok), "errors": len(bad)} for r, (ok, bad) in zip(runs, plan)},
            "rows": sum(len(ok) + len(bad) for ok, bad in plan)}


def _direct(out: Path, run: str, inv: str, ok: np.ndarray, bad: np.ndarray, night: int, rng) -> None:
    from schemas.tables import MEMBERS
    for b in range(0, len(ok), PER_FILE):
        tracks, expl = _batch(ok[b:b + PER_FILE], night, rng, inv)
        for name, table in (("tracks", tracks), ("explanations", expl)):
            d = out / name / f"run_id={run}"
            d.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, d / f"part-{inv}-{b // PER_FILE:06d}.parquet", compression="zstd")
    if len(bad):
        d = out / "errors" / f"run_id={run}"
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(_errors(bad, inv), d / f"part-{inv}-000000.parquet", compression="zstd")
    every = np.sort(np.concatenate([ok, bad]))
    d = out / "members" / f"run_id={run}"
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"track_id": [track_id(int(i)) for i in every], "catalogue_row": every.astype(np.int64),
                             "content_key": [None] * len(every)}, schema=MEMBERS), d / "part-0.parquet")


def _through_writers(out: str, fmt: str, run: str, inv: str, ok: np.ndarray, bad: np.ndarray, night: int, rng) -> None:
    from pipeline.output import open_writer
    w = open_writer(fmt, out, run, inv, commit_every=PER_FILE)
    w.recover()
    for b in range(0, len(ok), PER_FILE):
        tracks, expl = _batch(ok[b:b + PER_FILE], night, rng, inv)
        for r in tracks.to_pylist():
            w.add_track(r, expl.filter(pa.compute.equal(expl.column("track_id"), r["track_id"])))
        w.commit()
    for r in _errors(bad, inv).to_pylist():
        w.add_error(r)
    w.commit()
