"""The index ``musiclime serve`` searches: one row per (run, track) of ``tracks`` and of
``errors``, held as numpy codes and numbers (about 60 bytes a row) plus each distinct
track's id and tags once, and where each row's data files are.

It is built from the output's tables into a local cache folder named by the tables'
versions (:func:`fingerprint`), never into the output, and read back at start; a later
night changes the versions and so builds a new index. Building reads ``tracks`` and
``errors`` whole but only four columns of ``explanations`` (track, label, feature, rank),
each data file once, on a pool of threads.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import output

INDEX_VERSION = 1
TOP_FEATURES = 3  # a row keeps its primary label's top features (what "tracks that carry a feature" finds)
SORTS = ("prob", "margin", "night")
STATUSES = ("all", "ok", "error")
MAX_PER_PAGE = 200


class BadQuery(ValueError):
    """A malformed search parameter (the server answers 400 with its message)."""


def _choice(params, name: str, choices: tuple[str, ...], default: str) -> str:
    v = params.get(name) or default
    if v not in choices:
        raise BadQuery(f"{name} must be one of {', '.join(choices)}, not {v[:40]!r}")
    return v


def _int(params, name: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        v = int(raw)
    except ValueError:
        raise BadQuery(f"{name} must be a whole number, not {raw[:40]!r}") from None
    if not lo <= v <= hi:
        raise BadQuery(f"{name} must lie in {lo}..{hi}, not {v}")
    return v


@dataclass(frozen=True)
class Query:
    """A search: ``text`` matches track id, title, artist or album (case-insensitive, any
    part); the others filter exactly (None: any)."""
    text: str = ""
    label: str | None = None       # the primary explained label
    true: str | None = None        # the catalogue's label
    run: str | None = None
    model: str | None = None       # model_id, or a prefix of it
    topk: bool | None = None       # topk_resolved
    error: str | None = None       # an error_type (only error rows), or "any"
    feature: str | None = None     # among the row's top features of its primary label
    status: str = "all"
    sort: str = "night"
    order: str = "desc"
    page: int = 1
    per: int = 50

    @classmethod
    def parse(cls, params) -> Query:
        """From URL parameters (a mapping of str); raises :class:`BadQuery`."""
        text = (params.get("q") or "").strip()
        if len(text) > 200:
            raise BadQuery("q is longer than 200 characters")
        topk = params.get("topk") or ""
        if topk not in ("", "yes", "no"):
            raise BadQuery(f"topk must be yes or no, not {topk[:40]!r}")
        opt = {k: (params.get(k) or None) for k in ("label", "true", "run", "model", "error", "feature")}
        return cls(text=text, topk=None if not topk else topk == "yes", status=_choice(params, "status", STATUSES, "all"),
                   sort=_choice(params, "sort", SORTS, "night"), order=_choice(params, "order", ("desc", "asc"), "desc"),
                   page=_int(params, "page", 1, 1, 10**7), per=_int(params, "per", 50, 1, MAX_PER_PAGE), **opt)


def fingerprint(out: str, fmt: str, docs: list[dict]) -> str:
    """What decides the index: the output, this index's version, the runs' records and each
    table's version (Delta) or committed files (Parquet)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{INDEX_VERSION}\0{out}\0{fmt}".encode())
    for d in docs:
        h.update(json.dumps(d, sort_keys=True, default=str).encode())
    for table in ("tracks", "explanations", "errors"):
        if fmt == "iceberg":
            from pipeline.iceberg import IcebergTables
            h.update(f"\0{table}={IcebergTables.of_output(out).version(table)}".encode())
        elif fmt == "delta":
            from deltalake import DeltaTable
            from deltalake.exceptions import TableNotFoundError
            try:
                h.update(f"\0{table}={DeltaTable(output.delta_uri(out, table)).version()}".encode())
            except TableNotFoundError:
                h.update(f"\0{table}=none".encode())
        else:
            for run, loc in output.files(out, table, None, fmt):
                h.update(f"\0{table}:{run}:{loc}".encode())
    return h.hexdigest()


def cache_root() -> Path:
    from musiclime.models.registry import musiclime_home
    return musiclime_home() / "serve-index"


# ------------------------------------------------------------------------------ building

TRACK_COLUMNS = ["track_id", "title", "artist", "album", "predicted", "true_label", "explained_labels", "probabilities",
                 "model_id", "topk_resolved"]
GROUP = 512  # files read, then condensed, at a time: memory follows the index, not the files


def _tracks(t):
    """The index columns of ``tracks`` rows (a polars frame with run and file)."""
    import polars as pl
    top2 = pl.col("probabilities").list.sort(descending=True)
    return t.select(
        "track_id", "title", "artist", "album", "predicted", "true_label",
        pl.col("explained_labels").list.first().alias("label"),
        top2.list.first().cast(pl.Float32).alias("prob"),
        (top2.list.first() - top2.list.get(1, null_on_oob=True).fill_null(0.0)).cast(pl.Float32).alias("margin"),
        "model_id", pl.col("topk_resolved").cast(pl.Int8).fill_null(-1).alias("topk"), "run", "file")


def _explanations(e):
    """Per (track, label): its top features (lower-cased, as global_importance's tokens)
    and its file (a file holds whole tracks)."""
    import polars as pl
    return (e.filter(pl.col("rank") <= TOP_FEATURES).sort("file", "rank")
            .group_by("run", "file", "track_id", "label", maintain_order=True)
            .agg(pl.col("feature").str.to_lowercase().alias("top")).rename({"file": "efile"}))


READERS = {"tracks": (TRACK_COLUMNS, _tracks), "explanations": (["track_id", "label", "feature", "rank"], _explanations),
           "errors": (["track_id", "error_type"], lambda e: e)}


def _read_all(pool, table: str, files: list[tuple[str, str]], runs: list[str]):
    """The index columns of every file of ``table``, ``GROUP`` files at a time."""
    import polars as pl
    import pyarrow as pa
    columns, condense = READERS[table]
    code = {r: k for k, r in enumerate(runs)}

    def read(i: int):
        run, loc = files[i]
        t = output.read_file(loc, table, columns)
        return t.append_column("run", pa.array(np.full(t.num_rows, code[run], np.int16))).append_column(
            "file", pa.array(np.full(t.num_rows, i, np.int32)))
    parts = []
    for start in range(0, len(files), GROUP):
        tables = list(pool.map(read, range(start, min(start + GROUP, len(files)))))
        parts.append(condense(pl.from_arrow(pa.concat_tables(tables))))
        del tables
    return pl.concat(parts, how="vertical_relaxed") if parts else None


def _codes(col: str, vocab: list[str]):
    import polars as pl
    return (pl.col(col).replace_strict(vocab, list(range(len(vocab))), default=-1, return_dtype=pl.Int32)
            .alias(col))


def build(out: str, fmt: str, docs: list[dict], dest: Path, workers: int = 8) -> None:
    """Write the index of ``out`` into the folder ``dest`` (made whole or not at all)."""
    import polars as pl
    files = {t: output.files(out, t, None, fmt) for t in ("tracks", "explanations", "errors")}
    runs = [d["run_id"] for d in docs]
    runs += sorted({r for fs in files.values() for r, _ in fs} - set(runs))  # tables without a runs/ record
    with ThreadPoolExecutor(workers) as pool:
        tracks = _read_all(pool, "tracks", files["tracks"], runs)
        expl = _read_all(pool, "explanations", files["explanations"], runs)
        errors = _read_all(pool, "errors", files["errors"], runs)
    ok = tracks if tracks is not None else pl.DataFrame(schema={"track_id": pl.String, "run": pl.Int16})
    if expl is not None and tracks is not None:  # the primary label's top features, and where they are
        ok = ok.join(expl, on=["run", "track_id", "label"], how="left")
    del tracks, expl
    rows = pl.concat([ok.with_columns(pl.lit(0, pl.Int8).alias("kind")),
                      *([errors.with_columns(pl.lit(1, pl.Int8).alias("kind"))] if errors is not None else [])],
                     how="diagonal_relaxed")
    del ok, errors
    # each distinct track once, with its latest tags (an error row has none of its own)
    tags = (rows.filter(pl.col("kind") == 0).sort("run")
            .group_by("track_id").agg(pl.col(c).drop_nulls().last() for c in ("title", "artist", "album")))
    uniq = (rows.select("track_id").unique().join(tags, on="track_id", how="left").sort("track_id")
            .with_columns(pl.concat_str([pl.col(c).fill_null("") for c in ("track_id", "title", "artist", "album")],
                                        separator="\x1f").str.to_lowercase().alias("hay")))
    vocab = {
        "labels": sorted(set().union(*(set(rows[c].drop_nulls().unique()) for c in ("label", "predicted", "true_label")
                                       if c in rows.columns))),
        "models": sorted(set(rows["model_id"].drop_nulls().unique())) if "model_id" in rows.columns else [],
        "errors": sorted(set(rows["error_type"].drop_nulls().unique())) if "error_type" in rows.columns else [],
        "features": sorted(set(rows["top"].explode().drop_nulls().unique())) if "top" in rows.columns else [],
    }
    for c, kind in (("label", "labels"), ("predicted", "labels"), ("true_label", "labels"), ("model_id", "models"),
                    ("error_type", "errors")):
        if c not in rows.columns:
            rows = rows.with_columns(pl.lit(None, pl.String).alias(c))
        rows = rows.with_columns(_codes(c, vocab[kind]))
    if "top" not in rows.columns:
        rows = rows.with_columns(pl.lit(None, pl.List(pl.String)).alias("top"))
    feat = {f: i for i, f in enumerate(vocab["features"])}
    rows = rows.with_columns(
        pl.col("top").list.get(k, null_on_oob=True).replace_strict(feat, default=-1, return_dtype=pl.Int32)
        .fill_null(-1).alias(f"f{k}") for k in range(TOP_FEATURES))
    rows = rows.join(uniq.select("track_id").with_row_index("track").with_columns(pl.col("track").cast(pl.Int32)),
                     on="track_id")
    keep = ["track", "run", "kind", "label", "predicted", "true_label", "model_id", "error_type", "topk", "prob",
            "margin", "file", "efile", *(f"f{k}" for k in range(TOP_FEATURES))]
    for c, typ in (("prob", pl.Float32), ("margin", pl.Float32), ("topk", pl.Int8), ("efile", pl.Int32)):
        if c not in rows.columns:
            rows = rows.with_columns(pl.lit(None, typ).alias(c))
    rows = rows.select(keep).with_columns(pl.col("prob").fill_null(-1.0), pl.col("margin").fill_null(-1.0),
                                          pl.col("topk").fill_null(-1), pl.col("efile").fill_null(-1))
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=dest.parent))
    try:
        rows.write_parquet(tmp / "rows.parquet")
        uniq.select("track_id", "title", "artist", "album", "hay").write_parquet(tmp / "tracks.parquet")
        (tmp / "meta.json").write_text(json.dumps({"version": INDEX_VERSION, "out": out, "format": fmt, "runs": runs,
                                                   "docs": docs, "files": files, **vocab}, default=str))
        try:
            os.replace(tmp, dest)
        except OSError:  # another server built the same index first: theirs is as good
            if not (dest / "meta.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def build_apart(out: str, fmt: str, dest: Path, workers: int = 8) -> None:
    """:func:`build` in a child process: reading every data file peaks far above the index
    itself (1.6 GB for 1.1M rows, measured), and the server keeps none of it."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-m", "pipeline.serve.index", out, fmt, str(dest), str(workers)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"building the index of {out} failed: {done.stderr.strip()[-2000:]}")


if __name__ == "__main__":
    import sys
    _out, _fmt, _dest, _workers = sys.argv[1:5]
    build(_out, _fmt, output.runs(_out), Path(_dest), int(_workers))
