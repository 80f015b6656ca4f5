"""``report.html``: one self-contained page (figures and audio inlined, no network).

Catalogue view per class: stems x segments heatmap, top-20 words, audio/lyrics share,
probability distribution, counts, failed tracks. Track view for the most confident
tracks per class: probabilities, heatmap, lyrics coloured by weight, the original audio
and the composition of its top positive stem-segments.
"""
from __future__ import annotations

import base64
import functools
import html
import io
from dataclasses import replace
from pathlib import Path

import numpy as np

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
.grid{display:flex;flex-wrap:wrap;gap:1em}.card{border:1px solid #e3e3e3;border-radius:6px;padding:.8em;margin:.6em 0}
table{border-collapse:collapse}td,th{padding:.2em .6em;border-bottom:1px solid #eee;text-align:left}
.lyrics{white-space:pre-wrap;line-height:1.7;font-size:15px}.muted{color:#777}img{max-width:100%}
"""
# Any script error shows on the page and in the title, so a headless browser test sees it.
TRAP = ("<script>window.addEventListener('error',function(e){document.title='ERROR: '+e.message;"
        "document.body.setAttribute('data-error',e.message);});</script>")


def esc(value) -> str:
    """Every value that reaches the page goes through here: class names come from
    checkpoints and plugins, ids, lyrics and messages from catalogues."""
    return html.escape("" if value is None else str(value), quote=True)


def _mpl_text(text: str) -> str:
    # matplotlib reads "$...$" as mathtext and raises on an unbalanced "$": show it literally
    return str(text).replace("$", r"\$")


def _png(fig) -> str:
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _ogg(audio: np.ndarray, sr: int, max_sr: int = 16000) -> str:
    import soundfile as sf

    from musiclime.audio_io import resample
    a = np.asarray(audio, np.float32)
    if sr > max_sr:
        a, sr = resample(a, sr, max_sr), max_sr
    a = a / max(1e-6, float(np.abs(a).max())) * 0.9
    buf = io.BytesIO()
    sf.write(buf, a, sr, format="OGG", subtype="VORBIS")
    return f'<audio controls preload="none" src="data:audio/ogg;base64,{base64.b64encode(buf.getvalue()).decode()}"></audio>'


def heatmap(matrix: np.ndarray, stems: list[str], title: str, width: float = 5.5):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(width, 0.45 * len(stems) + 1.2))
    lim = float(np.abs(matrix).max()) or 1.0
    im = ax.imshow(matrix, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_yticks(range(len(stems)), stems)
    ax.set_xticks(range(matrix.shape[1]))
    ax.set_xlabel("segment")
    ax.set_title(_mpl_text(title), fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.04)
    return fig


def word_bars(words: list[str], values: list[float], signs: list[float], title: str):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.5, 0.22 * max(len(words), 3) + 1))
    colors = ["#c0392b" if s > 0 else "#2c7fb8" for s in signs]
    ax.barh(range(len(words))[::-1], values, color=colors)
    ax.set_yticks(range(len(words))[::-1], [_mpl_text(w) for w in words], fontsize=8)
    ax.set_xlabel("mean |weight| (red: pushes towards the class)")
    ax.set_title(_mpl_text(title), fontsize=10)
    return fig


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


def _sung_under_segments(e, track: dict, n_seg: int) -> str:
    """Time-synced lyrics: each explained word under the audio segments it is sung in."""
    if "sung_at_s" not in e.columns or not track.get("duration_s"):
        return ""
    seg_s = track["duration_s"] / n_seg
    cells: list[list[str]] = [[] for _ in range(n_seg)]
    for token, times in e.filter(e["sung_at_s"].is_not_null()).select("token", "sung_at_s").iter_rows():
        for t in times or []:
            cells[min(int(t // seg_s), n_seg - 1)].append(token)
    if not any(cells):
        return ""
    row = "".join(f"<td>{esc(' '.join(dict.fromkeys(c)))}</td>" for c in cells)
    return ("<table class='sung'><tr>" + "".join(f"<th>{i}</th>" for i in range(n_seg))
            + f"</tr><tr>{row}</tr></table><p class='muted'>words sung in each segment</p>")


def _lyrics_html(text: str, weights: dict[str, float]) -> str:
    """Each word coloured by its weight (red positive, blue negative), lime word semantics."""
    from musiclime.factorization import LyricsFactorization
    lf = LyricsFactorization(text)
    lim = max((abs(w) for w in weights.values()), default=0) or 1.0
    marks = {}
    for f, name in enumerate(lf.feature_names):
        w = weights.get(name)
        if w is None:
            continue
        a = min(1.0, abs(w) / lim)
        color = f"rgba(192,57,43,{a:.2f})" if w > 0 else f"rgba(44,127,184,{a:.2f})"
        for s, e in lf.spans(f):
            marks[s] = (e, color, w)
    out, i = [], 0
    while i < len(text):
        if i in marks:
            e, color, w = marks[i]
            out.append(f'<span title="{w:+.4f}" style="background:{color}">{esc(text[i:e])}</span>')
            i = e
        else:
            out.append(esc(text[i]))
            i += 1
    return "".join(out)


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
        m = np.zeros((len(stems), n_seg))
        for s, seg, w in gc.filter(pl.col("level") == "stem_segment").select("stem", "segment", "mean_weight").iter_rows():
            if s in stems:
                m[stems.index(s), seg] = w
        words = gc.filter(pl.col("level") == "word").sort("mean_abs_weight", descending=True).head(20)
        parts.append(f"<h3>{esc(c)}</h3><div class='grid'><div class='card'>"
                     f"{_png(heatmap(m, stems, f'{c}: mean weight per stem x segment'))}</div>")
        if words.height:
            parts.append("<div class='card'>" + _png(word_bars(words["token"].to_list(), words["mean_abs_weight"].to_list(),
                                                               words["mean_weight"].to_list(), f"{c}: top words")) + "</div>")
        parts.append("</div>")
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
        m = np.zeros((len(stems), n_seg))
        for s, seg, w in e.filter(pl.col("modality") == "audio").select("stem", "segment", "weight").iter_rows():
            if s in stems:
                m[stems.index(s), seg] = w
        word_w = dict(e.filter(pl.col("modality") == "lyrics").select("token", "weight").iter_rows())
        probs_txt = ", ".join(f"{esc(c)} {p:.2f}" for c, p in sorted(zip(classes, t["probabilities"]), key=lambda x: -x[1])[:5])
        about = " · ".join(esc(t.get(k)) for k in ("title", "artist", "album") if t.get(k))
        parts.append(f"<div class='card'><b>{esc(t['track_id'])}</b>"
                     + (f" <span class='muted'>({about})</span>" if about else "")
                     + f" · predicted <b>{esc(t['predicted'])}</b>"
                     f" ({probs_txt}) · surrogate R² {t['score']:.2f} · audio share {t['audio_share']:.0%}"
                     f"<div class='grid'><div>{_png(heatmap(m, stems, f'explaining {label}', 5))}"
                     f"{_sung_under_segments(e, t, n_seg)}</div>")
        row = rows_by_tid.get(t["track_id"])
        lyrics = None
        if row is not None:
            players, lyrics = _track_audio(doc, row, e, stems, n_seg)
            parts.append(f"<div>{players}</div>")
        parts.append("</div>")
        if lyrics:
            parts.append(f"<div class='lyrics'>{_lyrics_html(lyrics, word_w)}</div>")
        parts.append("</div>")
    return parts


@functools.lru_cache(maxsize=2)
def _demucs(model_name: str, repo: str | None, allow_pickle: bool):
    from musiclime.separation import get_separator
    return get_separator("demucs", model_name=model_name, repo=repo, allow_pickle=allow_pickle, device="cpu")


def _cached_demucs_stems(cfg, mix: np.ndarray, sr: int) -> np.ndarray | None:
    """The stems the job stored for this mix (float32 [4, T]), or None when not cached."""
    import torch

    from musiclime.separation import StemCache
    sep = _demucs(cfg.demucs_model, cfg.demucs_repo, cfg.trust_pickle)
    cache = StemCache(cfg.stem_cache)
    stems = None
    try:  # a GPU stage may have separated under bf16, whose entries carry their own keys
        for precision in ("fp32", "bf16"):
            sep.precision = precision
            stems = cache.load(cache.key(torch.from_numpy(mix), sr, sep), len(mix), sep.stem_names)
            if stems is not None:
                break
    finally:
        sep.precision = "fp32"
    return None if stems is None else stems.numpy()


def _track_audio(manifest: dict, row: dict, e, stems: list[str], n_seg: int) -> tuple[str, str | None]:
    """Players for the explained audio and its top positive stem-segments, and the lyrics."""
    from musiclime.factorization import STEM_NAMES, AudioFactorization
    from musiclime.records import ErrorRecord
    from musiclime.stages import decode
    from pipeline.config import ExplainConfig
    cfg = ExplainConfig(**{k: v for k, v in manifest["config"].items() if k in ExplainConfig.__dataclass_fields__})
    sr = int(manifest.get("sample_rate") or 16000)
    demucs = cfg.separator == "demucs"
    # demucs stems are not separated again: the mix is decoded as the job decoded it, and
    # the stems the job separated are read back from the stem cache
    inp = decode(row, (replace(cfg, separator="none") if demucs else cfg).decode_spec(), sr)
    if isinstance(inp, ErrorRecord) or inp.stems is None:
        return "<p class='muted'>audio unavailable</p>", None
    if demucs:
        stems = _cached_demucs_stems(cfg, inp.stems[0], sr)
        if stems is None:
            return (f"<div>original {_ogg(inp.stems[0], sr)}</div><p class='muted'>the demucs stems of this track "
                    f"are not in the stem cache ({esc(cfg.stem_cache)})</p>", inp.lyrics)
        inp.stems, inp.stem_names = stems, STEM_NAMES
    try:
        af = AudioFactorization(inp.stems, sr, n_seg, inp.stem_names)
    except ValueError:
        return "<p class='muted'>audio unavailable</p>", inp.lyrics
    pos = e.filter((e["modality"] == "audio") & (e["weight"] > 0)).sort("weight", descending=True)
    # the clearly positive stem-segments: at most 5, each at least a tenth of the largest
    top = pos.filter(pos["weight"] >= 0.1 * (pos["weight"].max() or 0)).head(5)
    mask = np.zeros((1, af.n_features), np.uint8)
    for s, seg in top.select("stem", "segment").iter_rows():
        if s in af.stem_names:
            mask[0, seg * af.n_stems + af.stem_names.index(s)] = 1
    full = af.full()[0].cpu().numpy()
    comp = af.compose(mask)[0].cpu().numpy()
    return (f"<div>original {_ogg(full, sr)}</div><div>top positive stem-segments "
            f"({esc(', '.join(f'{s}@{g}' for s, g in top.select('stem', 'segment').iter_rows()))}) {_ogg(comp, sr)}</div>",
            inp.lyrics)
