"""What each page of ``musiclime serve`` shows, as template contexts: the search from the
index alone; a track from its rows' few data files (64 tracks each); a class from
``global_importance``; a night's errors from ``errors``. Figures come from
:mod:`pipeline.figures`, like the report's. Nothing here writes."""
from __future__ import annotations

import functools
from typing import Any
from urllib.parse import urlencode

import numpy as np
from markupsafe import Markup

from pipeline import figures, output
from pipeline.serve.index import Query
from pipeline.serve.search import ServeIndex

NO_SOURCE = "this night recorded neither an audio file nor a catalogue for the track: nothing to play"


class NotFound(LookupError):
    """An id the output does not hold (the server answers 404 with its message)."""


@functools.lru_cache(maxsize=64)
def _file(loc: str, table: str):
    """A data file as a polars frame (files are immutable once committed: safe to keep)."""
    import polars as pl
    return pl.from_arrow(output.read_file(loc, table))


# ------------------------------------------------------------------------------ search

def search(ix: ServeIndex, params) -> dict:
    q = Query.parse(params)
    rows, total = ix.search(q)
    pages = max(1, -(-total // q.per))
    kept = {k: v for k, v in params.items() if v and k != "page"}

    def page_link(p: int) -> str | None:
        return "/?" + urlencode({**kept, "page": p}) if 1 <= p <= pages else None
    any_ = [("", "any")]
    selects = [
        ("label", "explained", any_ + [(c, c) for c in ix.labels]),
        ("true", "true label", any_ + [(c, c) for c in ix.labels]),
        ("run", "night", any_ + [(r, r) for r in reversed(ix.runs)]),
        ("model", "model", any_ + [(m, m[:10]) for m in ix.models]),
        ("topk", "top-10 resolved", any_ + [("yes", "yes"), ("no", "no")]),
        ("error", "error", any_ + [("any", "any error")] + [(e, e) for e in ix.errors]),
        ("status", "rows", [("all", "all"), ("ok", "explained"), ("error", "failed")]),
        ("sort", "sort by", [("night", "night"), ("prob", "probability"), ("margin", "margin")]),
        ("order", "order", [("desc", "descending"), ("asc", "ascending")]),
    ]
    chosen = {name: params.get(name) or ("" if name not in ("status", "sort", "order") else
                                         {"status": "all", "sort": "night", "order": "desc"}[name])
              for name, _, _ in selects}
    return dict(title="Search", q=q, rows=rows, total=total, pages=pages, selects=selects, chosen=chosen,
                prev=page_link(q.page - 1), next=page_link(q.page + 1))


# ------------------------------------------------------------------------------ a track

def _classes(ix: ServeIndex, run_id: str, n: int) -> list[str]:
    classes = (ix.docs.get(run_id) or {}).get("classes")
    return list(classes) if classes and len(classes) == n else [f"class {i}" for i in range(n)]


def track_row(ix: ServeIndex, track_id: str, run: str | None) -> tuple[int, list[int]]:
    """The row a track page shows (``run``'s, else the latest explained one) and all of the
    track's rows."""
    rows = ix.rows_of(track_id)
    if not rows:
        raise NotFound(f"no track {track_id!r} in this output")
    if run is not None:
        mine = [r for r in rows if ix.runs[int(ix.run[r])] == run]
        if not mine:
            raise NotFound(f"track {track_id!r} has no row in night {run!r}")
        return mine[0], rows
    ok = [r for r in rows if ix.kind[r] == 0]
    return (ok or rows)[-1], rows


def track_data(ix: ServeIndex, i: int) -> tuple[dict, Any]:
    """A row's ``tracks`` row (dict) and its explanations (polars), from their data files."""
    import polars as pl
    tid = ix.row(i).track_id
    _, loc = ix.file_of(i)
    t = _file(loc, "tracks").filter(pl.col("track_id") == tid)
    if not t.height:
        raise NotFound(f"track {tid!r} is not in its data file any more (was the output rewritten?)")
    eloc = ix.explanations_file_of(i)
    e = _file(eloc, "explanations").filter(pl.col("track_id") == tid) if eloc else None
    return t.row(0, named=True), e


def _top(e, label: str, n: int = 5) -> list[str]:
    if e is None:
        return []
    import polars as pl
    return e.filter(pl.col("label") == label).sort("rank").head(n)["feature"].to_list()


def _history(ix: ServeIndex, rows: list[int], shown: int, shown_t: dict | None, shown_e,
             max_read: int = 12) -> list[dict]:
    """Each row of the track, with what changed against the shown one."""
    base_top = _top(shown_e, shown_t["explained_labels"][0]) if shown_t and shown_e is not None else []
    out = []
    for n, r in enumerate(reversed(rows)):
        row = ix.row(r)
        changes: list[str] = []
        h = dict(run_id=row.run_id, model_id=row.model_id, status=row.kind if row.kind == "ok" else row.error_type,
                 predicted=row.predicted, prob=row.prob, top=row.top, current=r == shown, changes=changes)
        if row.kind == "ok" and r != shown and shown_t and n < max_read:
            t, e = track_data(ix, r)
            h["top"] = top = _top(e, t["explained_labels"][0])
            if t["model_id"] != shown_t["model_id"]:
                changes.append("another model")
            if t["predicted"] != shown_t["predicted"]:
                changes.append(f"predicted {t['predicted']} there, {shown_t['predicted']} here")
            dp = max(shown_t["probabilities"]) - max(t["probabilities"])
            if abs(dp) >= 0.005:
                changes.append(f"probability {dp:+.3f} here")
            if t.get("content_key") != shown_t.get("content_key"):
                changes.append("the track's files changed")
            gone, new = [f for f in top if f not in base_top], [f for f in base_top if f not in top]
            if gone or new:
                changes.append("top-5 here gains " + (", ".join(new) or "nothing") + ", loses "
                                    + (", ".join(gone) or "nothing"))
        out.append(h)
    return out


def audio_state(t: dict) -> str | None:
    """Why the track's recorded audio file cannot be played now, or None when it can (or
    when it has none: the catalogue row is then checked when played)."""
    from musiclime import storage
    if not t.get("audio_path"):
        return None
    try:
        now = storage.version_key(t["audio_path"])
    except Exception:
        now = None
    if now is None:
        return "the audio file recorded for this track is gone or cannot be reached"
    if t.get("audio_key") and now != t["audio_key"]:
        return ("the audio file has changed since this night (its size or modification time differ): "
                "it is not played, as it is not what was explained")
    return None


def source_row(ix: ServeIndex, i: int, t: dict) -> dict:
    """The input to hear a track from: its recorded audio file, else (provided stems, or an
    output from before audio files were recorded) the row of the catalogue its night
    recorded, while that row's content key is still the night's. Raises Unavailable."""
    why = audio_state(t)
    if why:
        raise Unavailable(why)
    if t.get("audio_path"):
        return {"track_id": t["track_id"], "catalogue_row": t["catalogue_row"], "audio_path": t["audio_path"]}
    from pipeline.catalogue import CatalogueReader, content_keys
    cfg = (ix.docs.get(ix.row(i).run_id) or {}).get("config") or {}
    if not cfg.get("catalogue"):
        raise Unavailable(NO_SOURCE)
    try:
        row = CatalogueReader(cfg["catalogue"]).row_at(int(t["catalogue_row"]))
    except Exception as e:
        raise Unavailable(f"the night's catalogue cannot be read now ({type(e).__name__})") from None
    if row is None or row.get("track_id") != t["track_id"]:
        raise Unavailable("the night's catalogue no longer holds this track at its row")
    if not t.get("content_key") or content_keys([row], cfg.get("label_column"))[0] != t["content_key"]:
        raise Unavailable("the track's files have changed since this night (its content key differs): "
                          "they are not played, as they are not what was explained")
    return row


def track(ix: ServeIndex, track_id: str, params) -> dict:
    import polars as pl
    i, rows = track_row(ix, track_id, params.get("run") or None)
    row = ix.row(i)
    if row.kind == "error":
        err = _file(ix.file_of(i)[1], "errors").filter(pl.col("track_id") == track_id)
        return dict(title=f"Track {track_id}", template="track_failed.html", row=row,
                    error=err.row(0, named=True) if err.height else {}, history=_history(ix, rows, i, None, None))
    t, e = track_data(ix, i)
    t["run_id"] = row.run_id
    label = params.get("label") or t["explained_labels"][0]
    if label not in t["explained_labels"]:
        raise NotFound(f"label {label!r} was not explained for this track in night {row.run_id!r}")
    el = e.filter(pl.col("label") == label) if e is not None else None
    classes = _classes(ix, row.run_id, len(t["probabilities"]))
    order = np.argsort(t["probabilities"])[::-1][:12]
    probs = figures.bars([classes[k] for k in order], [t["probabilities"][k] for k in order], "probabilities",
                         limit=1.0)
    audio = el.filter(pl.col("modality") == "audio") if el is not None else None
    stems = [s for s in ("vocals", "drums", "bass", "other", "mix") if audio is not None and s in set(audio["stem"])]
    n_seg = int(audio["segment"].max()) + 1 if audio is not None and audio.height else 0
    heat = ""
    if n_seg:
        m, se = figures.stem_segment_grid(audio, stems, n_seg)
        heat = figures.heatmap(m, stems, f"explaining {label}", se)
    words = el.filter(pl.col("modality") == "lyrics") if el is not None else None
    weights = dict(words.select("token", "weight").iter_rows()) if words is not None else {}
    times = ({tok: ts for tok, ts in words.select("token", "sung_at_s").iter_rows() if ts}
             if words is not None and "sung_at_s" in words.columns else {})
    lyrics = figures.lyrics(t["lyrics"], weights, times) if t.get("lyrics") else ""
    from pipeline.listen import top_positive
    note = audio_state(t)
    if not t.get("audio_path") and not ((ix.docs.get(row.run_id) or {}).get("config") or {}).get("catalogue"):
        note = NO_SOURCE
    return dict(title=f"Track {track_id}", t=t, label=label, probs=Markup(probs), heatmap=Markup(heat),
                sung=Markup(figures.sung_under_segments(el, t.get("duration_s"), n_seg) if el is not None else ""),
                lyrics=Markup(lyrics),
                lyrics_note="no lyrics" if not t.get("lyrics_source") else
                "the lyrics text was not recorded in this night's tables (an older release)",
                features=el.sort("rank").head(15).to_dicts() if el is not None else [],
                audio_note=note,
                audio_src={part: f"/audio/{part}/{_quote(track_id)}?" + urlencode({"run": row.run_id, "label": label})
                           for part in ("original", "top")},
                top_audio=[f"{s}@{g}" for s, g in top_positive(el)] if el is not None else [],
                audio_from=(f"{t.get('separator')} stems of {t['audio_path']}" if t.get("audio_path") else
                            "the files of the night's catalogue row"),
                history=_history(ix, rows, i, t, e))


def _quote(s: str) -> str:
    from urllib.parse import quote
    return quote(s, safe="")


def track_audio(ix: ServeIndex, track_id: str, part: str, params) -> bytes:
    """WAV bytes of a track's explained window (``original``) or of its top positive
    stem-segments (``top``), from its recorded audio file, only while that file is the one
    explained."""
    import polars as pl

    from pipeline.listen import encode, heard
    if part not in ("original", "top"):
        raise NotFound(f"no audio {part!r} (original or top)")
    i, _ = track_row(ix, track_id, params.get("run") or None)
    if ix.kind[i] != 0:
        raise NotFound(f"track {track_id!r} was not explained in that night")
    t, e = track_data(ix, i)
    source = source_row(ix, i, t)
    label = params.get("label") or t["explained_labels"][0]
    el = e.filter(pl.col("label") == label) if e is not None else None
    if el is None or not el.height:
        raise NotFound(f"label {label!r} was not explained for this track")
    n_seg = int(el.filter(pl.col("modality") == "audio")["segment"].max() or 0) + 1
    doc = ix.docs.get(ix.row(i).run_id) or {}
    got = heard(doc, source, el, n_seg)
    if isinstance(got, str):
        raise Unavailable(got)
    return encode(got.full if part == "original" else got.composed, got.sample_rate, "WAV")


class Unavailable(RuntimeError):
    """The audio exists in the tables but cannot be played now (the server answers 409)."""


# ------------------------------------------------------------------------------ classes, errors

def _run(ix: ServeIndex, params) -> str:
    run = params.get("run") or (ix.runs[-1] if ix.runs else None)
    if run is None or run not in ix.runs:
        raise NotFound(f"no night {run!r} in this output")
    return run


def _global(ix: ServeIndex, run: str):
    import polars as pl
    g = output.frame(ix.out, "global_importance", None, [run], ix.format)
    return g.filter(pl.col("label_source") == "predicted")


def classes(ix: ServeIndex, params) -> dict:
    import polars as pl
    run = _run(ix, params)
    g = _global(ix, run)
    sh = g.filter((pl.col("level") == "modality") & (pl.col("modality") == "audio"))
    share = dict(sh.select("label", "share_mean").iter_rows())
    counts = dict(sh.select("label", "n_tracks").iter_rows())
    labels = sorted(set(g["label"])) if g.height else list(ix.labels)
    return dict(title="Classes", run=run, runs=list(reversed(ix.runs)),
                note=None if g.height else f"night {run} is not aggregated: run `musiclime aggregate` on the output",
                classes=[dict(label=c, n=counts.get(c, ""), share=f"{share[c]:.0%} audio" if c in share else "")
                         for c in labels])


def class_page(ix: ServeIndex, label: str, params) -> dict:
    import polars as pl
    run = _run(ix, params)
    g = _global(ix, run)
    gc = g.filter(pl.col("label") == label)
    if not gc.height and label not in ix.labels:
        raise NotFound(f"no class {label!r} in this output")
    cells = gc.filter(pl.col("level") == "stem_segment")
    stems = [s for s in ("vocals", "drums", "bass", "other", "mix") if s in set(cells["stem"].drop_nulls())]
    n_seg = int(cells["segment"].max() or 0) + 1 if cells.height else 0
    heat = ""
    if n_seg:
        m, se = figures.stem_segment_grid(cells, stems, n_seg, "mean_weight", "mean_weight_se")
        heat = figures.heatmap(m, stems, f"{label}: mean weight ± se per stem x segment", se)

    def links(tokens: list[str]) -> list[str]:
        return ["/?" + urlencode({"label": label, "run": run, "feature": tok, "sort": "prob"}) for tok in tokens]
    top = (cells.sort("mean_abs_weight", descending=True).head(10)
           .with_columns(pl.format("{}@{}", "stem", "segment").alias("feature")).to_dicts())
    n = gc.filter(pl.col("level") == "modality")["n_tracks"].max() if gc.height else 0
    return dict(title=f"Class {label}", label=label, run=run, n_tracks=n or 0, heatmap=Markup(heat),
                words=Markup(figures.word_chart(gc, f"{label}: top words ± se", links=links) if gc.height else ""),
                cells=top, note=None if gc.height else f"night {run} has no global importances for {label}: "
                "run `musiclime aggregate` on the output")


def errors(ix: ServeIndex, params, per_type: int = 200) -> dict:
    run = _run(ix, params)
    e = output.frame(ix.out, "errors", None, [run], ix.format).sort("catalogue_row")
    groups = []
    for (typ,), part in sorted(e.group_by("error_type"), key=lambda kv: -kv[1].height):
        groups.append(dict(type=typ, n=part.height, rows=part.head(per_type).to_dicts()))
    return dict(title=f"Errors of night {run}", run=run, runs=list(reversed(ix.runs)), groups=groups)


def catalogue_row(ix: ServeIndex, run: str, row: int) -> dict:
    """A catalogue row of a night, from the catalogue its run recorded (never from a path in
    the request), with the errors recorded for it."""
    import polars as pl
    if run not in ix.runs:
        raise NotFound(f"no night {run!r} in this output")
    doc = ix.docs.get(run) or {}
    cat = (doc.get("config") or {}).get("catalogue")
    errs = output.frame(ix.out, "errors", None, [run], ix.format).filter(pl.col("catalogue_row") == row)
    fields, note = [], None
    if not cat:
        note = "this night recorded no catalogue"
    else:
        try:
            from pipeline.catalogue import CatalogueReader
            found = CatalogueReader(cat).row_at(row)
            fields = [(k, v) for k, v in found.items()] if found else []
        except Exception as err:  # the catalogue moved or cannot be read: say so, the page still answers
            note = f"the catalogue cannot be read now: {type(err).__name__}"
    if not fields and note is None:
        note = f"the catalogue has no row {row} now"
    return dict(title=f"Catalogue row {row}", run=run, catalogue=cat, fields=fields, note=note,
                errors=errs.to_dicts())
