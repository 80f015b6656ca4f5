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
        if fmt == "delta":
            from deltalake import DeltaTable
            from deltalake.exceptions import TableNotFoundError
            try:
                h.update(f"\0{table}={DeltaTable(output._delta_uri(out, table)).version()}".encode())
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

def _tracks_part(i: int, run: str, loc: str):
    import polars as pl
    t = pl.from_arrow(output.read_file(loc, "tracks", ["track_id", "title", "artist", "album", "predicted", "true_label",
                                                         "explained_labels", "probabilities", "model_id", "topk_resolved"]))
    top2 = pl.col("probabilities").list.sort(descending=True)
    return t.select(
        "track_id", "title", "artist", "album", "predicted", "true_label",
        pl.col("explained_labels").list.first().alias("label"),
        top2.list.first().cast(pl.Float32).alias("prob"),
        (top2.list.first() - top2.list.get(1, null_on_oob=True).fill_null(0.0)).cast(pl.Float32).alias("margin"),
        "model_id", pl.col("topk_resolved").cast(pl.Int8).fill_null(-1).alias("topk"),
        pl.lit(run).alias("run_id"), pl.lit(i, pl.Int32).alias("file"))


def _explanations_part(i: int, run: str, loc: str):
    import polars as pl
    e = pl.from_arrow(output.read_file(loc, "explanations", ["track_id", "label", "feature", "rank"]))
    return (e.filter(pl.col("rank") <= TOP_FEATURES)
            .with_columns(pl.lit(run).alias("run_id"), pl.lit(i, pl.Int32).alias("efile")))


def _errors_part(i: int, run: str, loc: str):
    import polars as pl
    e = pl.from_arrow(output.read_file(loc, "errors", ["track_id", "error_type"]))
    return e.with_columns(pl.lit(run).alias("run_id"), pl.lit(i, pl.Int32).alias("file"))


def _read_all(pool, part, files):
    import polars as pl
    parts = list(pool.map(lambda a: part(a[0], *a[1]), enumerate(files)))
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
        tracks = _read_all(pool, _tracks_part, files["tracks"])
        expl = _read_all(pool, _explanations_part, files["explanations"])
        errors = _read_all(pool, _errors_part, files["errors"])
    ok = tracks if tracks is not None else pl.DataFrame(schema={"track_id": pl.String, "run_id": pl.String})
    if expl is not None and tracks is not None:
        top = (expl.join(ok.select("run_id", "track_id", "label"), on=["run_id", "track_id", "label"], how="semi")
               .sort("rank").group_by("run_id", "track_id", maintain_order=True)
               .agg(pl.col("efile").first(), pl.col("feature").head(TOP_FEATURES).alias("top")))
        where = expl.group_by("run_id", "track_id").agg(pl.col("efile").first().alias("efile_any"))
        ok = (ok.join(top, on=["run_id", "track_id"], how="left").join(where, on=["run_id", "track_id"], how="left")
              .with_columns(pl.coalesce("efile", "efile_any").alias("efile")).drop("efile_any"))
    rows = pl.concat([ok.with_columns(pl.lit(0, pl.Int8).alias("kind")),
                      *([errors.with_columns(pl.lit(1, pl.Int8).alias("kind"))] if errors is not None else [])],
                     how="diagonal_relaxed")
    rows = rows.with_columns(pl.col("run_id").replace_strict(runs, list(range(len(runs))), return_dtype=pl.Int16)
                             .alias("run"))
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
