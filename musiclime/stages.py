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
    TrackInput,
    TrackResult,
)


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


@dataclass(frozen=True)
class LabelRule:
    """Which labels a track's explanation covers: ``top1``, ``true`` (the catalogue's
    ``label_column``) or ``all``."""
    labels: str = "top1"
    label_column: str | None = None


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


def read_lyrics(row: dict[str, Any]) -> str:
    text = row.get("lyrics")
    if isinstance(text, (bytes, bytearray)):
        try:
            return bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError("lyrics_decode_error", f"lyrics are not UTF-8: {e}") from None
    if isinstance(text, str):
        return text
    if row.get("lyrics_path"):
        from musiclime.audio_io import read_lyrics_file
        return read_lyrics_file(row["lyrics_path"])
    return ""


def decode(row: dict[str, Any], spec: DecodeSpec, sample_rate: int) -> TrackInput | ErrorRecord:
    """The decode stage; never raises for bad input."""
    from musiclime.audio_io import read_audio
    from musiclime.separation import StemCache, read_provided_stems
    from musiclime.separation.hpss import HPSSSeparator
    t0 = time.perf_counter()
    tid, idx = row["track_id"], row["catalogue_row"]
    window = spec.max_seconds if not spec.model_window else min(spec.max_seconds, spec.model_window)
    try:
        lyrics, truncated = truncate_words(read_lyrics(row), spec.max_words)
        flags: list[str] = ["lyrics_truncated"] if truncated else []
        mix = None
        if not spec.audio_used:
            # the model never hears audio: the audio columns are not read (a missing or bad
            # file is no error) and one silent stem stands in for it, kept whole by every mask
            stems, names = np.zeros((1, spec.segments), dtype=np.float32), ("mix",)
            flags.append(AUDIO_NOT_USED)
        elif spec.separator == "provided":
            stems_t, stem_flags = read_provided_stems({s: row.get(f"{s}_path") for s in STEMS}, sample_rate,
                                                      max_seconds=window)
            flags += stem_flags
            stems, names = stems_t.numpy(), STEMS
        else:
            mix, audio_flags = read_audio(row.get("audio_path") or "", sample_rate, max_seconds=window)
            flags += audio_flags
            if len(mix) and float(np.abs(mix).max()) <= SILENCE_PEAK:
                raise InputError("silent_audio", "the audio is digital silence")
            if len(mix) < spec.segments:
                raise InputError("too_short", f"{len(mix)} samples cannot be cut into {spec.segments} segments")
            if spec.separator == "none":
                stems, names, mix = mix[None], ("mix",), None
            elif spec.separator == "hpss":
                if spec.stem_cache is None:
                    raise ValueError("separator hpss needs a stem_cache folder")
                cache = StemCache(spec.stem_cache)
                stems_t, _ = cache.separate(HPSSSeparator(), mix, sample_rate)
                stems, names, mix = stems_t.numpy(), STEMS, None
            else:  # demucs: the GPU stage separates the mix on its device
                stems, names = None, STEMS
        if stems is not None:
            stems = np.ascontiguousarray(stems, dtype=np.float32)
        if not lyrics.strip():
            flags.append("no_lyrics")
        if "cropped" in flags and window < spec.max_seconds:  # cut to what the model sees, not to --max-seconds
            flags[flags.index("cropped")] = "cropped_to_model"
        true_label = None
        if spec.label_column:
            v = row.get(spec.label_column)
            true_label = None if v is None else str(v)
        return TrackInput(tid, idx, track_seed(spec.seed, tid), lyrics, sample_rate, stems, names, mix, true_label,
                          sorted(set(flags)), {"decode_s": time.perf_counter() - t0})
    except InputError as e:
        return ErrorRecord(tid, idx, "decode", e.code, f"track {tid!r}: {e.message}")


def label_indices(rule: LabelRule, classes: list[str], probs0: np.ndarray, true_label: str | None) -> list[int]:
    """The indices of the labels ``rule`` explains, given the unperturbed probabilities ``[C]``."""
    if rule.labels == "all":
        return [int(i) for i in np.argsort(-probs0, kind="stable")]
    if rule.labels == "true":
        if true_label is None:
            raise InputError("missing_label", f"--labels true but the track has no {rule.label_column!r}")
        if true_label not in classes:
            raise InputError("unknown_label", f"label {true_label!r} is not a model class {classes}")
        return [classes.index(true_label)]
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
                 status="ok", flags=sorted(set(inp.flags) | set(exp.flags)), invocation_id=invocation_id)
    local = exp.to_arrow()
    table = local.add_column(0, "track_id", pa.array([inp.track_id] * local.num_rows, pa.string()))
    return TrackResult(track, table, exp.model_rows)
