"""MusicLIME: joint audio + lyrics perturbation explained by a local linear surrogate."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from musiclime.errors import InputError
from musiclime.explanation import Explanation, FeatureSpace
from musiclime.factorization import AudioFactorization, LyricsFactorization
from musiclime.masks import Modality, sample_masks, unique_rows
from musiclime.protocol import (as_embedding, as_probs, check_model, has_mask_lyrics,
                                is_late_fusion, model_device)
from musiclime.surrogate import FeatureSelection, fit_surrogate, mask_distances

# Rows per model call when batch_size="auto", per device type. Measured by
# bench/bench_core.py: on 2-core CPUs batches of a few rows beat large ones per row
# (cache effects), on GPUs large batches keep the device busy.
AUTO_BATCH_SIZE = {"cpu": 8, "cuda": 256}
# Perturbations are composed (audio summed, lyrics joined) in blocks of this many rows by
# one op each, then fed to the model in batches of batch_size: composing costs one call
# per block, not per batch, and memory holds one block of audio at a time.
COMPOSE_BLOCK = 16
HEAD_BATCH_SIZE = 4096  # a late-fusion head is tiny next to the encoders

Progress = Callable[[int, int], None]
"""``progress(rows_done, rows_total)``, called after every model batch."""


def auto_batch_size(device: torch.device | str | None) -> int:
    kind = torch.device(device).type if device is not None else "cpu"
    return AUTO_BATCH_SIZE.get(kind, AUTO_BATCH_SIZE["cpu"])


@dataclass(frozen=True)
class Plan:
    """What will be perturbed for one track: the features, the masks and why.

    ``masks`` is ``uint8 [num_samples, n_audio + n_lyrics]`` over ALL joint features; the
    surrogate is fitted on ``columns`` only (the explained modality's features).
    """
    features: FeatureSpace
    masks: np.ndarray
    columns: np.ndarray
    modality: Modality
    flags: tuple[str, ...]
    seed: int


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


class _Batcher:
    """Runs ``fn`` over row slices of at most ``size`` rows; on CUDA out-of-memory halves
    ``size`` and retries the same slice, so a too-large batch costs one retry, not a crash."""

    def __init__(self, size: int):
        self.size = max(1, int(size))

    def run(self, n: int, fn: Callable[[slice], object], progress: Callable[[int], None] | None = None):
        """``[fn(slice) for each batch of rows 0..n]``."""
        out, start = [], 0
        while start < n:
            sl = slice(start, min(start + self.size, n))
            try:
                out.append(fn(sl))
            except torch.cuda.OutOfMemoryError:
                if self.size == 1:
                    raise
                self.size //= 2
                torch.cuda.empty_cache()
                continue
            start = sl.stop
            if progress:
                progress(sl.stop - sl.start)
        return out


class MusicLIME:
    """Explains one track of a multimodal model with MusicLIME.

    Args:
        num_samples: perturbations per track, row 0 (the whole input) included.
        batch_size: rows per model call; ``"auto"`` picks the measured default of the
            device the model runs on (:data:`AUTO_BATCH_SIZE`).
        kernel_width: LIME kernel width on the cosine distance (reference: 25).
        feature_selection: lime's modes: ``auto``, ``none``, ``forward_selection``,
            ``highest_weights``, ``lasso_path``.
        num_features: features kept per label; None keeps all of the explained modality.
        seed: mask seed, used when ``explain`` gets none.
        alpha: Ridge regularisation of the surrogate.
    """

    def __init__(self, num_samples: int = 1000, batch_size: int | str = "auto",
                 kernel_width: float = 25, feature_selection: str = "auto",
                 num_features: int | None = None, seed: int = 0, alpha: float = 1.0):
        if int(num_samples) < 2:
            raise ValueError(f"num_samples must be >= 2, got {num_samples}")
        if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be 'auto' or a positive int, got {batch_size!r}")
        self.num_samples = int(num_samples)
        self.batch_size = batch_size
        self.kernel_width = float(kernel_width)
        self.feature_selection = FeatureSelection.parse(feature_selection)
        self.num_features = num_features
        self.seed = int(seed)
        self.alpha = float(alpha)

    # ------------------------------------------------------------------ the three steps

    def plan(self, af: AudioFactorization, lf: LyricsFactorization, modality: str = "both",
             seed: int | None = None) -> Plan:
        """Choose the features and draw the masks (numpy, CPU, from :func:`sample_masks`)."""
        modality = Modality.parse(modality)
        flags: list[str] = []
        if lf.n_features == 0:
            if modality is Modality.LYRICS:
                raise InputError("no_lyrics", "modality='lyrics' but the lyrics have no words")
            if modality is Modality.BOTH:
                flags.append("no_lyrics")
                modality = Modality.AUDIO
        seed = self.seed if seed is None else int(seed)
        fs = FeatureSpace.from_factorizations(af, lf)
        masks = sample_masks(self.num_samples, fs.n_audio, fs.n_lyrics, seed, modality)
        columns = {Modality.BOTH: np.arange(fs.n_features),
                   Modality.AUDIO: np.arange(fs.n_audio),
                   Modality.LYRICS: np.arange(fs.n_audio, fs.n_features)}[modality]
        return Plan(fs, masks, columns, modality, tuple(flags), seed)

    def predict(self, model, af: AudioFactorization, lf: LyricsFactorization, masks: np.ndarray,
                progress: Progress | None = None) -> tuple[np.ndarray, int]:
        """Model probabilities of every mask row: ``(float64 [N, C], model rows evaluated)``.

        Duplicate rows (and, for late-fusion models, duplicate half-masks) are evaluated
        once. Audio is composed batch by batch on the model's device, so memory holds one
        batch of perturbed audio at a time.
        """
        check_model(model)
        if int(model.sample_rate) != af.sample_rate:
            raise ValueError(f"sample-rate mismatch: the audio factorization is at {af.sample_rate} Hz, "
                             f"the model expects {model.sample_rate} Hz; resample the audio first")
        n_audio = af.n_features
        if masks.shape[1] != n_audio + lf.n_features:
            raise InputError("bad_mask_shape", f"masks have {masks.shape[1]} columns, expected "
                                               f"{n_audio} audio + {lf.n_features} lyrics")
        device = model_device(model)
        if device is not None and device != af.device:
            af = af.to(device)
        size = auto_batch_size(device or af.device) if self.batch_size == "auto" else self.batch_size
        batcher = _Batcher(size)
        n_classes = len(model.classes)
        with torch.inference_mode():
            if is_late_fusion(model):
                return self._predict_late_fusion(model, af, lf, masks, batcher, n_classes, progress)
            uniq, inverse = unique_rows(masks)
            done = [0]

            def tick(k):
                done[0] += k
                if progress:
                    progress(done[0], len(uniq))

            parts = []
            for block in _batches(len(uniq), max(COMPOSE_BLOCK, batcher.size)):
                audio = af.compose(uniq[block, :n_audio])
                texts = lf.compose(uniq[block, n_audio:])
                parts += batcher.run(len(texts), lambda sl: as_probs(
                    model.predict_proba(audio[sl], texts[sl]), sl.stop - sl.start, n_classes), tick)
            probs = np.concatenate(parts)
        return probs[inverse], len(uniq)

    def _predict_late_fusion(self, model, af, lf, masks, batcher, n_classes, progress):
        n_audio = af.n_features
        ua, ia = unique_rows(masks[:, :n_audio])
        ul, il = unique_rows(masks[:, n_audio:])
        total, done = len(ua) + len(ul), [0]

        def tick(k):
            done[0] += k
            if progress:
                progress(done[0], total)

        audio_parts = []
        for block in _batches(len(ua), max(COMPOSE_BLOCK, batcher.size)):
            audio = af.compose(ua[block])
            audio_parts += batcher.run(len(audio), lambda sl: as_embedding(
                model.embed_audio(audio[sl]), sl.stop - sl.start, "embed_audio"), tick)
        audio_emb = torch.cat(audio_parts)
        if has_mask_lyrics(model):
            lyr = lambda sl: model.embed_lyrics_masks(lf, ul[sl])  # noqa: E731
        else:
            lyr = lambda sl: model.embed_lyrics(lf.compose(ul[sl]))  # noqa: E731
        lyrics_emb = torch.cat(batcher.run(len(ul), lambda sl: as_embedding(
            lyr(sl), sl.stop - sl.start, "embed_lyrics"), tick))
        ia_t = torch.as_tensor(ia, device=audio_emb.device)
        il_t = torch.as_tensor(il, device=lyrics_emb.device)
        probs = [as_probs(model.head(audio_emb[ia_t[sl]], lyrics_emb[il_t[sl]]), sl.stop - sl.start, n_classes)
                 for sl in _batches(len(masks), HEAD_BATCH_SIZE)]
        return np.concatenate(probs), total

    def fit(self, plan: Plan, probs: np.ndarray, classes: Sequence[str],
            labels: Sequence[int] | None = None, top_labels: int | None = 1,
            model_rows: int = 0) -> Explanation:
        """Fit one surrogate per explained label on the plan's explained columns."""
        probs = np.asarray(probs, dtype=np.float64)
        if probs.shape != (len(plan.masks), len(classes)):
            raise InputError("bad_model_output", f"probabilities {probs.shape} do not match "
                                                 f"{len(plan.masks)} masks x {len(classes)} classes")
        ranking = [int(i) for i in np.argsort(-probs[0], kind="stable")]
        if labels is not None:
            labels = [int(x) for x in labels]
            bad = [x for x in labels if not 0 <= x < len(classes)]
            if bad:
                raise ValueError(f"labels {bad} out of range for {len(classes)} classes")
            top = ranking if top_labels is None else ranking[:max(top_labels, 1)]
        else:
            k = 1 if top_labels is None else int(top_labels)
            labels = top = ranking[:k]
        data = plan.masks[:, plan.columns]
        distances = mask_distances(data)
        fits = {}
        for label in labels:
            fit = fit_surrogate(data, probs, label, self.kernel_width, self.num_features,
                                self.feature_selection, alpha=self.alpha, distances=distances)
            # back to joint feature indices
            fits[label] = type(fit)(fit.intercept, [(int(plan.columns[i]), w) for i, w in fit.weights],
                                    fit.score, fit.local_pred)
        return Explanation(classes=list(classes), probabilities=probs[0].copy(), labels=list(labels),
                           top_labels=list(top), features=plan.features, fits=fits,
                           modality=plan.modality.value, flags=plan.flags,
                           num_samples=len(plan.masks), model_rows=model_rows, seed=plan.seed)

    # ------------------------------------------------------------------ the one verb

    def explain(self, model, af: AudioFactorization, lf: LyricsFactorization,
                labels: Sequence[int] | None = None, top_labels: int | None = 1,
                modality: str = "both", seed: int | None = None,
                progress: Progress | None = None) -> Explanation:
        """Explain ``model`` on one track.

        Args:
            model: follows :class:`musiclime.protocol.MusicModel`.
            af, lf: the track's audio and lyrics factorizations.
            labels: class indices to explain; if None, the ``top_labels`` most probable.
            modality: ``both``, or ``audio`` / ``lyrics`` to perturb one modality only.
            seed: mask seed (default: the explainer's).
            progress: ``progress(rows_done, rows_total)`` after each model batch.
        """
        t0 = time.perf_counter()
        plan = self.plan(af, lf, modality, seed)
        t1 = time.perf_counter()
        probs, rows = self.predict(model, af, lf, plan.masks, progress)
        t2 = time.perf_counter()
        exp = self.fit(plan, probs, model.classes, labels, top_labels, model_rows=rows)
        exp.timings.update(plan_s=t1 - t0, predict_s=t2 - t1, fit_s=time.perf_counter() - t2)
        return exp
