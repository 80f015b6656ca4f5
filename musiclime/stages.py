"""Per-track stages of the explain job, as plain functions (Ray calls them; tests can too).

decode (CPU): catalogue row -> TrackInput (stems at the model's rate, lyrics, flags), or an
ErrorRecord for bad input. Stems come from the catalogue (provided), the stem cache, the
hpss separator, or are the mix itself (none); demucs stems are made by the GPU stage
(:mod:`musiclime.gpu_stage`) on its device. fit (CPU): a Prediction -> a TrackResult (table rows).
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from musiclime.errors import InputError
from musiclime.explainer import ExplainerSpec
from musiclime.factorization import SILENCE_PEAK, truncate_words
from musiclime.factorization import STEM_NAMES as STEMS
from musiclime.records import (  # noqa: F401 (the stages' records)
    AUDIO_NOT_USED,
    ErrorRecord,
    Predictions,
    TrackAbout,
    TrackInput,
    TrackResult,
)
from musiclime.separation import read_provided_stems
from musiclime.tags import FIELDS as TAG_FIELDS
from musiclime.tags import Tags


@dataclass(frozen=True)
class DecodeSpec:
    """What the decode stage needs of a run's settings."""
    seed: int = 0
    separator: str = "hpss"          # provided | hpss | none | demucs (separated in the GPU stage)
    segments: int = 10
    max_seconds: float = 30.0
    model_window: float | None = None  # seconds the model hears: the decoded window is cut to it
    max_words: int = 1000
    audio_used: bool = True
    label_column: str | None = None
    stem_cache: str | None = None
    lyrics_window: str = "on"          # on: synced lyrics are cut to the audio window explained
    window: str = "middle"             # whole: the track up to max_seconds, not cut to the model's window


NAMED_LABELS = ("top1", "true", "all")


@dataclass(frozen=True)
class LabelRule:
    """Which labels a track's explanation covers: ``top1``, ``true`` (the catalogue's
    ``label_column``), ``all``, ``topk:N`` or class names (``choir,strings``)."""
    labels: str = "top1"
    label_column: str | None = None

    @staticmethod
    def parse(value: object) -> str:
        """``--labels``: top1 | true | all | topk:N | CLASS[,CLASS...] (a multi-label tagger's
        tags, e.g. ``choir,strings``; checked against the model's classes once it is loaded:
        :meth:`unknown`). Returns the value normalised (``topk:03`` -> ``topk:3``, no blanks)."""
        text = str(value).strip()
        if text in NAMED_LABELS:
            return text
        if text.startswith("topk:"):
            n = text[5:]
            if not n.isdigit() or int(n) < 1:
                raise ValueError(f"labels topk:N needs a count N >= 1, got {value!r}")
            return f"topk:{int(n)}"
        names = [t.strip() for t in text.split(",")]
        if not text or any(not t for t in names) or len(set(names)) != len(names):
            raise ValueError(f"labels must be top1, true, all, topk:N or distinct class names separated by "
                             f"commas, got {value!r}")
        return ",".join(names)

    def unknown(self, classes: list[str]) -> list[str]:
        """The class names the rule lists that the model does not have (none for the rules)."""
        if self.labels in NAMED_LABELS or self.labels.startswith("topk:"):
            return []
        return [n for n in self.labels.split(",") if n not in classes]


@dataclass(frozen=True)
class FitSpec:
    """What the fit stage needs: the explainer, the label rule and what it writes beside
    the weights (the run's separator and config hash)."""
    explainer: ExplainerSpec
    labels: LabelRule
    separator: str
    config_hash: str


def track_seed(seed: int, track_id: str) -> int:
    """The track's mask seed: independent of order, actor count and catalogue size. The 8
    bytes are read as a signed int64, the type ``tracks.seed`` has in every warehouse (the
    explainer takes it as is: see :func:`musiclime.masks.seed_bits`)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{track_id}".encode(), digest_size=8).digest(), "little",
                          signed=True)


def decode(row: dict[str, Any], spec: DecodeSpec, sample_rate: int) -> TrackInput | ErrorRecord:
    """The decode stage; never raises for bad input."""
    t0 = time.perf_counter()
    tid, idx = row["track_id"], row["catalogue_row"]
    try:
        return _decode(row, spec, sample_rate, t0)
    except InputError as e:
        return ErrorRecord(tid, idx, "decode", e.code, f"track {tid!r}: {e.message}")


def _decode(row: dict[str, Any], spec: DecodeSpec, sample_rate: int, t0: float) -> TrackInput:
    from musiclime.lyrics_sources import find_lyrics

    tid, idx = row["track_id"], row["catalogue_row"]
    window = spec.max_seconds
    if spec.model_window and spec.window == "middle":
        window = min(window, spec.model_window)
    tags = _TagReader(row.get("audio_path"))
    found = find_lyrics(row, tags)
    flags: list[str] = list(found.flags)
    about = TrackAbout(lyrics_source=found.source)
    mix = None
    if not spec.audio_used:
        # the model never hears audio: the audio columns are not read (a missing or bad
        # file is no error; its tags may be read for lyrics) and one silent stem stands in
        stems, names = np.zeros((1, spec.segments), dtype=np.float32), ("mix",)
        flags.append(AUDIO_NOT_USED)
        seconds = None
    elif spec.separator == "provided":
        stems_t, stem_flags, about.window_start_s = read_provided_stems(
            {s: row.get(f"{s}_path") for s in STEMS}, sample_rate, max_seconds=window)
        flags += stem_flags
        stems, names = stems_t.numpy(), STEMS
        seconds = stems.shape[1] / sample_rate
    else:
        stems, names, mix, about = _decode_mix(row, spec, sample_rate, window, flags, about)
        heard = stems if stems is not None else mix
        seconds = heard.shape[-1] / sample_rate if heard is not None else None
    text = found.text
    if found.synced is not None and seconds is not None and spec.lyrics_window == "on":
        text, about.word_times = found.synced.within(about.window_start_s, about.window_start_s + seconds)
        flags.append("lyrics_windowed")
    lyrics, truncated = truncate_words(text, spec.max_words)
    flags += ["lyrics_truncated"] if truncated else []
    if stems is not None:
        stems = np.ascontiguousarray(stems, dtype=np.float32)
    if not lyrics.strip():
        flags.append("no_lyrics")
    if "cropped" in flags and window < spec.max_seconds:  # cut to what the model sees, not to --max-seconds
        flags[flags.index("cropped")] = "cropped_to_model"
    if row.get("audio_path") and spec.audio_used:
        t = tags()
        if t is not None:
            about.title, about.artist, about.album = t.title, t.artist, t.album
            flags += t.flags
    flags += _catalogue_tags(row, about)
    return TrackInput(tid, idx, track_seed(spec.seed, tid), lyrics, sample_rate, stems, names, mix,
                      _true_label(row, spec, tags), sorted(set(flags)), {"decode_s": time.perf_counter() - t0},
                      about)


def _catalogue_tags(row: dict[str, Any], about: TrackAbout) -> list[str]:
    """A catalogue's own title, artist and album columns, where it has them, stand before
    the file's tags (a curated catalogue is what a reader searches by); cleaned and capped
    as tags are. Returns the flags."""
    from musiclime.tags import clean
    flags = []
    for name in ("title", "artist", "album"):
        value, cut = clean(row.get(name))
        if value:
            setattr(about, name, value)
            flags += ["tag_truncated"] if cut else []
    return flags


def _decode_mix(row: dict[str, Any], spec: DecodeSpec, sample_rate: int, window: float, flags: list[str],
                about: TrackAbout) -> tuple[np.ndarray | None, tuple[str, ...], np.ndarray | None, TrackAbout]:
    """The mix's window, separated (hpss), kept whole (none) or handed on (demucs)."""
    from musiclime.audio_io import read_window
    from musiclime.separation import StemCache
    from musiclime.separation.hpss import HPSSSeparator
    from musiclime.storage import version_key

    d = read_window(row.get("audio_path") or "", sample_rate, max_seconds=window)
    flags += d.flags
    about.decoder, about.window_start_s = d.decoder, round(d.start_s, 6)
    # where the audio was and which version of it: a reader plays it again only while it matches
    about.audio_path = row.get("audio_path")
    about.audio_key = version_key(about.audio_path) if about.audio_path else None
    mix = d.audio
    if len(mix) and float(np.abs(mix).max()) <= SILENCE_PEAK:
        raise InputError("silent_audio", "the audio is digital silence")
    if len(mix) < spec.segments:
        raise InputError("too_short", f"{len(mix)} samples cannot be cut into {spec.segments} segments")
    if spec.separator == "none":
        return mix[None], ("mix",), None, about
    if spec.separator == "hpss":
        if spec.stem_cache is None:
            raise ValueError("separator hpss needs a stem_cache folder")
        stems_t, _ = StemCache(spec.stem_cache).separate(HPSSSeparator(), mix, sample_rate)
        return stems_t.numpy(), STEMS, None, about
    return None, STEMS, mix, about  # demucs: the GPU stage separates the mix on its device


class _TagReader:
    """The audio file's tags, read at most once and only when asked (a text classifier with
    lyrics in the catalogue never opens the audio file)."""

    def __init__(self, path: str | None):
        self.path, self.done = path, False
        self.tags: Tags | None = None

    def __call__(self) -> Tags | None:
        if not self.done:
            self.done = True
            self.tags = _read_tags(self.path) if self.path else None
        return self.tags


def _read_tags(path: str) -> Tags | None:
    from musiclime import storage
    from musiclime.audio_io import file_exists
    from musiclime.tags import read_tags
    try:
        if not file_exists(path):
            return None
    except InputError:
        return None
    source = storage.readable(path)
    try:
        return read_tags(source)
    finally:
        if not isinstance(source, str):
            source.close()


def _true_label(row: dict[str, Any], spec: DecodeSpec, tags: _TagReader) -> str | None:
    """The catalogue's label column; a folder's comes from the tags (``--label-column genre``)."""
    if not spec.label_column:
        return None
    v = row.get(spec.label_column)
    if v is None and spec.label_column in TAG_FIELDS and spec.label_column not in row:
        t = tags()
        v = getattr(t, spec.label_column, None) if t is not None else None
    return None if v is None else str(v)


def label_indices(rule: LabelRule, classes: list[str], probs0: np.ndarray, true_label: str | None) -> list[int]:
    """The indices of the labels ``rule`` explains, given the unperturbed probabilities ``[C]``."""
    order = [int(i) for i in np.argsort(-probs0, kind="stable")]
    if rule.labels == "all":
        return order
    if rule.labels.startswith("topk:"):
        return order[: int(rule.labels[5:])]
    if rule.labels == "true":
        if true_label is None:
            raise InputError("missing_label", f"--labels true but the track has no {rule.label_column!r}")
        if true_label not in classes:
            raise InputError("unknown_label", f"label {true_label!r} is not a model class {classes}")
        return [classes.index(true_label)]
    if rule.labels != "top1":  # class names (checked against the model's classes before the run)
        unknown = rule.unknown(classes)
        if unknown:
            raise InputError("unknown_label", f"--labels names {unknown}, not classes of the model")
        return [classes.index(n) for n in rule.labels.split(",")]
    return [int(np.argmax(probs0))]


def fit(pred: Predictions | ErrorRecord, spec: FitSpec, invocation_id: str) -> TrackResult | ErrorRecord:
    """The fit stage: surrogates for the explained labels -> the track's table rows (the
    stopping rule's own fit under ``num_samples="auto"``, else fitted here)."""
    import pyarrow as pa

    if isinstance(pred, ErrorRecord):
        return pred
    t0 = time.perf_counter()
    inp = pred.input
    classes, probs = pred.classes, pred.probs
    try:
        if pred.explanation is not None:
            exp = pred.explanation
        else:
            labels = label_indices(spec.labels, classes, probs[0], inp.true_label)
            exp = spec.explainer.build(inp.seed).fit(pred.plan, probs, classes, labels=labels, top_labels=None,
                                                     model_rows=pred.model_rows)
    except InputError as e:
        return ErrorRecord(inp.track_id, inp.catalogue_row, "fit", e.code, f"track {inp.track_id!r}: {e.message}")
    fits = []
    for lab in exp.labels:
        f, share = exp.fits[lab], exp.modality_share(lab)
        fits.append(dict(label=classes[lab], label_index=lab, score=f.score, intercept=f.intercept,
                         local_pred=f.local_pred, audio_share=share["audio"], lyrics_share=share["lyrics"]))
    primary = fits[0]
    fs = exp.features
    timings = dict(inp.timings, predict_s=pred.timings.get("predict_s", 0.0), fit_s=time.perf_counter() - t0)
    track = dict(track_id=inp.track_id, catalogue_row=inp.catalogue_row, seed=inp.seed,
                 predicted=classes[int(np.argmax(probs[0]))], probabilities=[float(x) for x in probs[0]],
                 true_label=inp.true_label, explained_labels=[classes[lab] for lab in exp.labels],
                 score=primary["score"], intercept=primary["intercept"], local_pred=primary["local_pred"],
                 audio_share=primary["audio_share"], lyrics_share=primary["lyrics_share"], label_fits=fits,
                 n_samples=exp.num_samples, model_rows=exp.model_rows, design=exp.design, target=exp.target,
                 topk_resolved=exp.topk_resolved,
                 topk_separation=None if np.isnan(exp.separation) else float(exp.separation),
                 n_features=fs.n_features,
                 n_audio_features=fs.n_audio, n_lyrics_features=fs.n_lyrics,
                 duration_s=pred.duration_s, modality=exp.modality, separator=spec.separator,
                 model_id=pred.model_id, config_hash=spec.config_hash,
                 timings={k: float(timings.get(k, 0.0)) for k in ("decode_s", "separate_s", "predict_s", "fit_s")},
                 status="ok", flags=sorted(set(inp.flags) | set(exp.flags)), invocation_id=invocation_id,
                 windows=pred.windows, lyrics=inp.lyrics or None,
                 **(inp.about or TrackAbout()).columns())
    local = exp.to_arrow()
    table = local.add_column(0, "track_id", pa.array([inp.track_id] * local.num_rows, pa.string()))
    times = (inp.about.word_times if inp.about else None) or {}
    sung = [times.get(tok) if tok is not None else None for tok in local.column("token").to_pylist()]
    table = table.append_column("sung_at_s", pa.array(sung, pa.list_(pa.float64())))
    return TrackResult(track, table, exp.model_rows)
