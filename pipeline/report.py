"""``report.html``: one self-contained page (figures and audio inlined, no network).

Catalogue view per class: stems x segments heatmap, top-20 words, audio/lyrics share,
probability distribution, counts, failed tracks. Track view for the most confident
tracks per class: probabilities, heatmap, lyrics coloured by weight, the original audio
and the composition of its top positive stem-segments.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

from pipeline import figures
from pipeline.figures import esc

STYLE = figures.WEIGHT_CSS + """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
.grid{display:flex;flex-wrap:wrap;gap:1em}.card{border:1px solid #e3e3e3;border-radius:6px;padding:.8em;margin:.6em 0}
table{border-collapse:collapse}td,th{padding:.2em .6em;border-bottom:1px solid #eee;text-align:left}
.lyrics{white-space:pre-wrap;line-height:1.7;font-size:15px}.muted{color:#777}img{max-width:100%}
"""
# Any script error shows on the page and in the title, so a headless browser test sees it.
TRAP = ("<script>window.addEventListener('error',function(e){document.title='ERROR: '+e.message;"
        "document.body.setAttribute('data-error',e.message);});</script>")


def _mpl_text(text: str) -> str:
    # matplotlib reads "$...$" as mathtext and raises on an unbalanced "$": show it literally
    return str(text).replace("$", r"\$")


def _png(fig) -> str:
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def share_bars(labels: list[str], mean: list[float], q25: list[float], q75: list[float], title: str):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 0.35 * max(len(labels), 2) + 1.2))
    y = np.arange(len(labels))
    ax.barh(y, mean, color="#e67e22", label="audio")
    ax.barh(y, 1 - np.asarray(mean), left=mean, color="#8e44ad", label="lyrics")
    # the interquartile range as a line of its own: a skewed class's mean may lie outside it
    ax.hlines(y, q25, q75, colors="k")
    ax.plot(q25, y, "k|", q75, y, "k|", markersize=8)
    ax.set_yticks(y, [_mpl_text(lab) for lab in labels])
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of sum |weight| (bars: audio quartiles across tracks)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=10)
    return fig


def prob_hist(probs_by_class: dict[str, list[float]]):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3))
    for name, p in probs_by_class.items():
        ax.hist(p, bins=np.linspace(0, 1, 21), alpha=0.5, label=_mpl_text(name))
    ax.set_xlabel("probability of the predicted class")
    ax.set_ylabel("tracks")
    ax.legend(fontsize=7)
    ax.set_title("model confidence", fontsize=10)
    return fig


def build_report(out: str | Path, tracks_per_class: int = 3, max_tracks: int = 20, audio: bool = True,
                 run_id: str | None = None) -> Path | str:
    """``report.html`` in the output (a Path, or a URI on object storage) for one night:
    ``run_id`` or the latest run; its tracks are the latest explanation of each track in
    that night's catalogue (see :func:`pipeline.output.latest_selection`)."""
    import matplotlib
    matplotlib.use("Agg")
    import polars as pl

    from pipeline import output
    from pipeline.global_importance import aggregate
    out = str(out).rstrip("/")
    fmt = output.existing_format(out)
    doc, sel = output.latest_selection(out, run_id, fmt)
    run_id = doc["run_id"]
    g = output.frame(out, "global_importance", None, [run_id], fmt)
    if not g.height:  # not aggregated yet: aggregate now (not written)
        g = aggregate(out, night=run_id)
    source_runs = sorted(set(sel["run_id"]))
    tracks = (output.frame(out, "tracks", None, source_runs, fmt)
              .join(sel.select("run_id", "track_id"), on=["run_id", "track_id"], how="semi"))
    errors = output.frame(out, "errors", None, [run_id], fmt)
    g = g.filter(pl.col("label_source") == "predicted")
    classes = doc.get("classes") or sorted(set(tracks["predicted"]))
    stems = [s for s in ("vocals", "drums", "bass", "other", "mix")
             if s in set(g.filter(pl.col("level") == "stem")["stem"].drop_nulls())]
    n_seg = int(g.filter(pl.col("level") == "segment")["segment"].max() or 0) + 1
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>musiclime report {esc(str(run_id))}</title>",
             f"<style>{STYLE}</style>{TRAP}</head><body>",
             f"<h1>musiclime report</h1><p class='muted'>run {esc(str(run_id))} · model "
             f"{esc(str(doc.get('model_id') or '')[:16])} · {tracks.height} tracks explained, "
             f"{0 if errors is None else errors.height} failed</p>"]
    parts += _catalogue_view(g, tracks, errors, classes, stems, n_seg)
    parts += _track_view(out, fmt, doc, tracks, classes, stems, n_seg, tracks_per_class, max_tracks, audio)
    parts.append("</body></html>")
    from musiclime import storage
    loc = output.location(out, "report.html")
    storage.write_atomic(loc, "".join(parts).encode("utf-8"))
    return loc if storage.is_uri(loc) else Path(loc)




def _catalogue_view(g, tracks, errors, classes: list[str], stems: list[str], n_seg: int) -> list[str]:
    """Per class: track counts, confidence, modality shares, stems x segments heatmaps, top
    words; then the failed tracks."""
    import polars as pl
    parts: list[str] = []
    parts.append("<h2>Catalogue</h2><div class='grid'>")
    counts = tracks.group_by("predicted").len().sort("predicted")
    parts.append("<div class='card'><b>Tracks per predicted class</b><table>" + "".join(
        f"<tr><td>{esc(c)}</td><td>{esc(n)}</td></tr>" for c, n in counts.iter_rows()) + "</table></div>")
    probs = {c: [max(p) for p in tracks.filter(pl.col("predicted") == c)["probabilities"].to_list()] for c in classes}
    parts.append(f"<div class='card'>{_png(prob_hist({k: v for k, v in probs.items() if v}))}</div>")
    sh = g.filter((pl.col("level") == "modality") & (pl.col("modality") == "audio")).sort("label")
    if sh.height:
        parts.append("<div class='card'>" + _png(share_bars(sh["label"].to_list(), sh["share_mean"].to_list(),
                                                           sh["share_q25"].to_list(), sh["share_q75"].to_list(),
                                                           "audio vs lyrics per class")) + "</div>")
    parts.append("</div>")
    for c in classes:
        gc = g.filter(pl.col("label") == c)
        if gc.height == 0:
            continue
        m, se = figures.stem_segment_grid(gc.filter(pl.col("level") == "stem_segment"), stems, n_seg,
                                          "mean_weight", "mean_weight_se")
        parts.append(f"<h3>{esc(c)}</h3><div class='grid'><div class='card'>"
                     f"{figures.heatmap(m, stems, f'{c}: mean weight per stem x segment', se)}</div>")
        parts.append(f"<div class='card'>{figures.word_chart(gc, f'{c}: top words')}</div></div>")
    if errors is not None and errors.height:
        parts.append("<h2>Failed tracks</h2><table><tr><th>track</th><th>row</th><th>stage</th><th>error</th><th>message</th></tr>")
        for r in errors.sort("catalogue_row").iter_rows(named=True):
            parts.append(f"<tr><td>{esc(r['track_id'])}</td><td>{esc(r['catalogue_row'])}</td><td>{esc(r['stage'])}</td>"
                         f"<td>{esc(r['error_type'])}</td><td>{esc(r['message'])}</td></tr>")
        parts.append("</table>")
    return parts


def _track_view(out: str, fmt: str | None, doc: dict, tracks, classes: list[str], stems: list[str], n_seg: int,
                tracks_per_class: int, max_tracks: int, audio: bool) -> list[str]:
    """The most confident tracks of each class: probabilities, heatmap, audio, lyrics."""
    import polars as pl

    from pipeline import output
    parts: list[str] = []
    parts.append("<h2>Tracks</h2><p class='muted'>The most confident tracks of each class.</p>")
    chosen = (tracks.with_columns(pl.col("probabilities").list.max().alias("conf")).sort("conf", descending=True)
              .group_by("predicted", maintain_order=True).head(tracks_per_class).head(max_tracks))
    ids = chosen["track_id"].to_list()
    rows_by_tid: dict = {}
    if audio and doc.get("config"):
        try:  # stream the catalogue, keeping only the chosen tracks' rows
            from pipeline.catalogue import CatalogueReader
            wanted = set(ids)
            for r in CatalogueReader(doc["config"]["catalogue"]).rows():
                if r["track_id"] in wanted:
                    rows_by_tid.setdefault(r["track_id"], r)  # the first row of an id is the explained one
        except Exception:
            rows_by_tid = {}
    wanted = chosen.select("run_id", "track_id")
    te = pl.concat([pl.from_arrow(t).join(wanted, on=["run_id", "track_id"], how="semi")
                    for t in output.scan_table(out, "explanations", None, sorted(set(chosen["run_id"])), fmt)]
                   or [output.frame(out, "explanations", None, [], fmt)])
    for t in chosen.iter_rows(named=True):
        label = t["explained_labels"][0]
        e = te.filter((pl.col("track_id") == t["track_id"]) & (pl.col("label") == label))
        m, se = figures.stem_segment_grid(e.filter(pl.col("modality") == "audio"), stems, n_seg)
        word_w = dict(e.filter(pl.col("modality") == "lyrics").select("token", "weight").iter_rows())
        probs_txt = ", ".join(f"{esc(c)} {p:.2f}" for c, p in sorted(zip(classes, t["probabilities"]), key=lambda x: -x[1])[:5])
        about = " · ".join(esc(t.get(k)) for k in ("title", "artist", "album") if t.get(k))
        parts.append(f"<div class='card'><b>{esc(t['track_id'])}</b>"
                     + (f" <span class='muted'>({about})</span>" if about else "")
                     + f" · predicted <b>{esc(t['predicted'])}</b>"
                     f" ({probs_txt}) · surrogate R² {t['score']:.2f} · audio share {t['audio_share']:.0%}"
                     f"<div class='grid'><div>{figures.heatmap(m, stems, f'explaining {label}', se)}"
                     f"{figures.sung_under_segments(e, t.get('duration_s'), n_seg)}</div>")
        row = rows_by_tid.get(t["track_id"])
        lyrics = None
        if row is not None:
            players, lyrics = _track_audio(doc, row, e, n_seg)
            parts.append(f"<div>{players}</div>")
        parts.append("</div>")
        if lyrics:
            parts.append(f"<div class='lyrics'>{figures.lyrics(lyrics, word_w)}</div>")
        parts.append("</div>")
    return parts


def _track_audio(manifest: dict, row: dict, e, n_seg: int) -> tuple[str, str | None]:
    """Players for the explained audio and its top positive stem-segments, and the lyrics."""
    from pipeline.listen import heard, ogg
    got = heard(manifest, row, e, n_seg)
    if isinstance(got, str):
        return f"<p class='muted'>audio unavailable: {esc(got)}</p>", None
    return (f"<div>original {_player(ogg(got.full, got.sample_rate))}</div><div>top positive stem-segments "
            f"({esc(', '.join(f'{s}@{g}' for s, g in got.top))}) {_player(ogg(got.composed, got.sample_rate))}</div>",
            got.lyrics)


def _player(data: bytes) -> str:
    return f'<audio controls preload="none" src="data:audio/ogg;base64,{base64.b64encode(data).decode()}"></audio>'
