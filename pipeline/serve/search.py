"""The index in memory: numpy columns of every (run, track) row, each distinct track's id
and tags once, and a permutation per sort key, so a search is a few vectorised passes
over the rows (milliseconds at a million) whatever it filters on."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.serve import index as ix

log = logging.getLogger("musiclime.serve")


@dataclass
class Row:
    """One row of a search result, as pages show it."""
    index: int
    track_id: str
    title: str | None
    artist: str | None
    album: str | None
    run_id: str
    model_id: str | None
    kind: str  # ok | error
    label: str | None
    predicted: str | None
    true_label: str | None
    error_type: str | None
    prob: float | None
    margin: float | None
    topk: bool | None
    top: list[str]


class ServeIndex:
    """Loaded from a folder :func:`pipeline.serve.index.build` wrote."""

    def __init__(self, folder: Path):
        import polars as pl
        meta = json.loads((folder / "meta.json").read_text())
        self.folder, self.meta = folder, meta
        self.out, self.format = meta["out"], meta["format"]
        self.runs: list[str] = meta["runs"]
        self.docs = {d["run_id"]: d for d in meta["docs"]}
        self.files: dict[str, list[tuple[str, str]]] = {k: [tuple(f) for f in v] for k, v in meta["files"].items()}
        self.labels, self.models, self.errors, self.features = (meta[k] for k in ("labels", "models", "errors",
                                                                                    "features"))
        self._lookup = {k: {v: i for i, v in enumerate(meta[k])} for k in ("labels", "models", "errors", "features")}
        rows = pl.read_parquet(folder / "rows.parquet")
        self.n = rows.height
        col = {c: rows[c].to_numpy() for c in rows.columns}
        self.track, self.run, self.kind = col["track"], col["run"], col["kind"]
        self.label, self.predicted, self.true = col["label"], col["predicted"], col["true_label"]
        self.model, self.error, self.topk = col["model_id"], col["error_type"], col["topk"]
        self.prob, self.margin = col["prob"], col["margin"]
        self.file, self.efile = col["file"], col["efile"]
        self.top = np.stack([col[f"f{k}"] for k in range(ix.TOP_FEATURES)], 1)
        tracks = pl.read_parquet(folder / "tracks.parquet")
        self.track_ids = tracks["track_id"]
        self.tags = tracks.select("title", "artist", "album")
        self.hay = tracks["hay"]
        # descending orders; a night sorts its rows by probability
        self.perm = {"prob": np.argsort(-self.prob, kind="stable").astype(np.int32),
                     "margin": np.argsort(-self.margin, kind="stable").astype(np.int32),
                     "night": np.lexsort((-self.prob, -self.run.astype(np.int32))).astype(np.int32)}

    # -------------------------------------------------------------------------- searching

    def _code(self, vocab: str, value: str) -> int:
        return self._lookup[vocab].get(value, -2)  # -2 matches no row

    def mask(self, q: ix.Query) -> np.ndarray | None:
        """The rows ``q`` keeps (None: all)."""
        m: np.ndarray | None = None

        def keep(more: np.ndarray) -> None:
            nonlocal m
            m = more if m is None else (m & more)
        if q.text:
            hits = self.hay.str.contains(q.text.lower(), literal=True).to_numpy()
            keep(hits[self.track])
        if q.label:
            keep(self.label == self._code("labels", q.label))
        if q.true:
            keep(self.true == self._code("labels", q.true))
        if q.run:
            keep(self.run == (self.runs.index(q.run) if q.run in self.runs else -2))
        if q.model:
            codes = [i for i, mid in enumerate(self.models) if mid.startswith(q.model)]
            keep(np.isin(self.model, codes))
        if q.topk is not None:
            keep(self.topk == int(q.topk))
        if q.error:
            keep(self.kind == 1 if q.error == "any" else self.error == self._code("errors", q.error))
        if q.feature:
            keep((self.top == self._code("features", q.feature.lower())).any(1))
        if q.status != "all":
            keep(self.kind == (0 if q.status == "ok" else 1))
        return m

    def search(self, q: ix.Query) -> tuple[list[Row], int]:
        """The page of rows ``q`` asks for, and how many rows match in all."""
        t0 = time.perf_counter()
        perm = self.perm[q.sort]
        m = self.mask(q)
        sel = perm if m is None else perm[m[perm]]
        if q.order == "asc":
            sel = sel[::-1]
        start = (q.page - 1) * q.per
        page = sel[start:start + q.per]
        log.debug("search %s: %d rows in %.1f ms", q, len(sel), 1e3 * (time.perf_counter() - t0))
        return [self.row(int(i)) for i in page], int(len(sel))

    # -------------------------------------------------------------------------- one track

    def rows_of(self, track_id: str) -> list[int]:
        """Every row of a track (its runs, ok and failed), oldest run first."""
        i = int(self.track_ids.search_sorted(track_id))
        if i >= len(self.track_ids) or self.track_ids[i] != track_id:
            return []
        found = np.flatnonzero(self.track == i)
        return [int(r) for r in found[np.argsort(self.run[found], kind="stable")]]

    def row(self, i: int) -> Row:
        t = int(self.track[i])
        title, artist, album = self.tags.row(t)

        def name(vocab: list[str], code) -> str | None:
            return vocab[int(code)] if code >= 0 else None
        ok = self.kind[i] == 0
        return Row(index=i, track_id=self.track_ids[t], title=title, artist=artist, album=album,
                   run_id=self.runs[int(self.run[i])], model_id=name(self.models, self.model[i]),
                   kind="ok" if ok else "error", label=name(self.labels, self.label[i]),
                   predicted=name(self.labels, self.predicted[i]), true_label=name(self.labels, self.true[i]),
                   error_type=name(self.errors, self.error[i]), prob=float(self.prob[i]) if ok else None,
                   margin=float(self.margin[i]) if ok else None,
                   topk=None if self.topk[i] < 0 else bool(self.topk[i]),
                   top=[self.features[int(f)] for f in self.top[i] if f >= 0])

    def file_of(self, i: int) -> tuple[str, str]:
        """(run_id, location) of the tracks (or errors) file holding row ``i``."""
        return self.files["tracks" if self.kind[i] == 0 else "errors"][int(self.file[i])]

    def explanations_file_of(self, i: int) -> str | None:
        e = int(self.efile[i])
        return None if e < 0 else self.files["explanations"][e][1]


def open_index(out: str, cache: Path | None = None, workers: int = 8) -> ServeIndex:
    """The index of ``out``: read from the cache when its tables have not changed since it
    was built, else built there first (the output is only read)."""
    from pipeline import output
    out = str(out).rstrip("/")
    fmt = output.existing_format(out)
    if fmt is None:
        raise FileNotFoundError(f"{out} holds no musiclime tables (no run.json, tracks/ or tracks/_delta_log)")
    docs = output.runs(out)
    key = ix.fingerprint(out, fmt, docs)
    root = Path(cache) if cache else ix.cache_root()
    folder = root / key
    if not (folder / "meta.json").is_file():
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        ix.build_apart(out, fmt, folder, workers)
        log.info("index of %s built in %.1f s: %s", out, time.perf_counter() - t0, folder)
    return ServeIndex(folder)
