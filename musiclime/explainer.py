"""MusicLIME: joint audio + lyrics perturbation explained by a local linear surrogate."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from musiclime.errors import InputError
from musiclime.explanation import Explanation, FeatureSpace
from musiclime.factorization import AudioFactorization, LyricsFactorization
from musiclime.masks import (Design, Modality, perturbed_columns, sample_foldover_masks, sample_grid_masks,
                             sample_masks, seed_bits, unique_rows)
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

# num_samples="auto": sample sizes tried in turn (i.i.d.; each a prefix of the next, so a
# round pays only for its new masks) and grid sides (grid design; the half-masks of a
# smaller grid are those of the larger one).
AUTO_SCHEDULE = (250, 500, 1000, 2000, 4000, 8000)
AUTO_GRID_SIDES = (32, 64, 128, 256, 512)
DESIGNS = tuple(d.value for d in Design)

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
    design: str = "iid"


@dataclass(frozen=True)
class Adaptive:
    """What ``num_samples="auto"`` settled on: the final plan, its probabilities, and the
    explanation fitted on it (``model_rows`` over all rounds, ``stability``, ``rounds``)."""
    plan: Plan
    probs: np.ndarray
    explanation: Explanation


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


class OutputCache:
    """Per-track memo of model outputs keyed by mask bytes (one store per kind: joint
    rows' probabilities, or a late-fusion model's audio / lyrics embeddings), so growing
    sample sets (``num_samples="auto"``) pay only for masks not seen before."""

    def __init__(self):
        self._index: dict[str, dict[bytes, int]] = {}
        self._chunks: dict[str, list] = {}
        self.rows_computed = 0

    def missing(self, kind: str, rows: np.ndarray) -> np.ndarray:
        """Indices of ``rows`` (``uint8 [n, width]``) with no stored output."""
        index = self._index.setdefault(kind, {})
        return np.array([i for i, r in enumerate(rows) if r.tobytes() not in index], dtype=np.int64)

    def add(self, kind: str, rows: np.ndarray, values) -> None:
        index, chunks = self._index.setdefault(kind, {}), self._chunks.setdefault(kind, [])
        start = len(index)
        for i, r in enumerate(rows):
            index[r.tobytes()] = start + i
        chunks.append(values)
        self.rows_computed += len(rows)

    def gather(self, kind: str, rows: np.ndarray):
        """Stored outputs of ``rows`` in order (a torch tensor or numpy array)."""
        chunks = self._chunks[kind]
        if len(chunks) > 1:  # one contiguous block from now on
            chunks[:] = [torch.cat(chunks) if isinstance(chunks[0], torch.Tensor) else np.concatenate(chunks)]
        idx = [self._index[kind][r.tobytes()] for r in rows]
        block = chunks[0]
        return block[torch.as_tensor(idx, device=block.device)] if isinstance(block, torch.Tensor) else block[idx]


class MusicLIME:
    """Explains one track of a multimodal model with MusicLIME.

    Args:
        num_samples: perturbations per track, row 0 (the whole input) included; or
            ``"auto"``: sample in rounds (:data:`AUTO_SCHEDULE`, or :data:`AUTO_GRID_SIDES`
            for the grid design) and stop once the explanation is stable: the mean top-k
            Jaccard between the fit and fits on ``bootstraps`` bootstrap resamples of its
            samples reaches ``stability``; at most ``max_samples`` rows.
        design: ``"iid"`` (joint i.i.d. masks, the reference's), ``"foldover"`` (i.i.d.
            masks each followed by its complement: pairwise interactions no longer leak
            into the weights; :func:`~musiclime.masks.sample_foldover_masks`) or ``"grid"``
            (:func:`~musiclime.masks.sample_grid_masks`: few distinct half-masks, so a
            late-fusion model's encoders run far fewer times than there are samples).
            ``"auto"`` (default): the grid when ``num_samples="auto"`` and the model is
            late-fusion (per encoder pass the grid was more faithful and more stable on
            both demo tasks, bench/bench_sampling.py), foldover otherwise (at 1000
            samples it raised the top-10 Jaccard across seeds from 0.72 to 0.82 on genre
            and from 0.82 to 0.83 on emotion, with higher deletion AOPC).
        grid_size: ``(n_audio_masks, n_lyrics_masks)`` for the grid design; default
            ``num_samples // 4`` each.
        batch_size: rows per model call; ``"auto"`` picks the measured default of the
            device the model runs on (:data:`AUTO_BATCH_SIZE`).
        kernel_width: LIME kernel width on the cosine distance (reference: 25).
        feature_selection: lime's modes: ``auto``, ``none``, ``forward_selection``,
            ``highest_weights``, ``lasso_path``.
        num_features: features kept per label; None keeps all of the explained modality.
        seed: mask seed, used when ``explain`` gets none.
        alpha: Ridge regularisation of the surrogate.
    """

    def __init__(self, num_samples: int | str = 1000, batch_size: int | str = "auto",
                 kernel_width: float = 25, feature_selection: str = "auto",
                 num_features: int | None = None, seed: int = 0, alpha: float = 1.0,
                 design: str = "auto", grid_size: tuple[int, int] | None = None,
                 stability: float = 0.8, top_k: int = 10, bootstraps: int = 20,
                 max_samples: int = 8000):
        self.adaptive = num_samples == "auto"
        if not self.adaptive and (isinstance(num_samples, str) or int(num_samples) < 2):
            raise ValueError(f"num_samples must be 'auto' or an int >= 2, got {num_samples!r}")
        if design not in DESIGNS:
            raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
        if not 0 < stability <= 1:
            raise ValueError(f"stability must be in (0, 1], got {stability}")
        if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be 'auto' or a positive int, got {batch_size!r}")
        self.num_samples = AUTO_SCHEDULE[0] if self.adaptive else int(num_samples)
        self.design, self.grid_size = design, grid_size
        self.stability, self.top_k, self.bootstraps = float(stability), int(top_k), int(bootstraps)
        self.max_samples = int(max_samples)
        self.batch_size = batch_size
        self.kernel_width = float(kernel_width)
        self.feature_selection = FeatureSelection.parse(feature_selection)
        self.num_features = num_features
        self.seed = seed_bits(seed)
        self.alpha = float(alpha)

    # ------------------------------------------------------------------ the three steps

    def design_for(self, model=None) -> str:
        """The mask design used for ``model``: ``iid``, ``foldover`` or ``grid`` (resolves
        ``auto``)."""
        if self.design != "auto":
            return self.design
        return "grid" if self.adaptive and model is not None and is_late_fusion(model) else "foldover"

    def plan(self, af: AudioFactorization, lf: LyricsFactorization, modality: str = "both",
             seed: int | None = None, num_samples: int | None = None,
             grid_size: tuple[int, int] | None = None, design: str | None = None) -> Plan:
        """Choose the features and draw the masks (numpy, CPU) in the design's sampler:
        :func:`sample_masks`, :func:`sample_foldover_masks`, or :func:`sample_grid_masks`
        (only when both modalities are perturbed; i.i.d. otherwise)."""
        modality = Modality.parse(modality)
        flags: list[str] = []
        if lf.n_features == 0:
            if modality is Modality.LYRICS:
                raise InputError("no_lyrics", "modality='lyrics' but the lyrics have no words")
            if modality is Modality.BOTH:
                flags.append("no_lyrics")
                modality = Modality.AUDIO
        seed = self.seed if seed is None else seed_bits(seed)
        fs = FeatureSpace.from_factorizations(af, lf)
        n = self.num_samples if num_samples is None else int(num_samples)
        design = design or self.design_for()
        if design == "grid" and modality is not Modality.BOTH:
            design = "iid"   # one modality perturbed: nothing to cross
        if design == "grid":
            grid = grid_size or self.grid_size or (max(2, n // 4),) * 2
            masks = sample_grid_masks(n, fs.n_audio, fs.n_lyrics, grid, seed)
        elif design == "foldover":
            masks = sample_foldover_masks(n, fs.n_audio, fs.n_lyrics, seed, modality)
        else:
            masks = sample_masks(n, fs.n_audio, fs.n_lyrics, seed, modality)
        columns = np.arange(fs.n_features)[perturbed_columns(modality, fs.n_audio, fs.n_lyrics)]
        return Plan(fs, masks, columns, modality, tuple(flags), seed, design)

    def predict(self, model, af: AudioFactorization, lf: LyricsFactorization, masks: np.ndarray,
                progress: Progress | None = None, cache: OutputCache | None = None) -> tuple[np.ndarray, int]:
        """Model probabilities of every mask row: ``(float64 [N, C], model rows evaluated)``.

        Duplicate rows (and, for late-fusion models, duplicate half-masks) are evaluated
        once. Audio is composed batch by batch on the model's device, so memory holds one
        batch of perturbed audio at a time. With a ``cache``, masks it already holds are
        not evaluated again; the returned count is then of new rows only.
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
        cache = OutputCache() if cache is None else cache
        before = cache.rows_computed
        with torch.inference_mode():
            if is_late_fusion(model):
                probs = self._predict_late_fusion(model, af, lf, masks, batcher, n_classes, progress, cache)
            else:
                uniq, inverse = unique_rows(masks)
                new = uniq[cache.missing("joint", uniq)]
                done = [0]

                def tick(k):
                    done[0] += k
                    if progress:
                        progress(done[0], len(new))

                parts = []
                for block in _batches(len(new), max(COMPOSE_BLOCK, batcher.size)):
                    audio = af.compose(new[block, :n_audio])
                    texts = lf.compose(new[block, n_audio:])
                    parts += batcher.run(len(texts), lambda sl: as_probs(
                        model.predict_proba(audio[sl], texts[sl]), sl.stop - sl.start, n_classes), tick)
                if len(new):
                    cache.add("joint", new, np.concatenate(parts))
                probs = cache.gather("joint", uniq)[inverse]
        return probs, cache.rows_computed - before

    def _predict_late_fusion(self, model, af, lf, masks, batcher, n_classes, progress, cache):
        n_audio = af.n_features
        ua, ia = unique_rows(masks[:, :n_audio])
        ul, il = unique_rows(masks[:, n_audio:])
        ua_new, ul_new = ua[cache.missing("audio", ua)], ul[cache.missing("lyrics", ul)]
        total, done = len(ua_new) + len(ul_new), [0]

        def tick(k):
            done[0] += k
            if progress:
                progress(done[0], total)

        audio_parts = []
        for block in _batches(len(ua_new), max(COMPOSE_BLOCK, batcher.size)):
            audio = af.compose(ua_new[block])
            audio_parts += batcher.run(len(audio), lambda sl: as_embedding(
                model.embed_audio(audio[sl]), sl.stop - sl.start, "embed_audio"), tick)
        if audio_parts:
            cache.add("audio", ua_new, torch.cat(audio_parts))
        if has_mask_lyrics(model):
            lyr = lambda sl: model.embed_lyrics_masks(lf, ul_new[sl])  # noqa: E731
        else:
            lyr = lambda sl: model.embed_lyrics(lf.compose(ul_new[sl]))  # noqa: E731
        if len(ul_new):
            cache.add("lyrics", ul_new, torch.cat(batcher.run(len(ul_new), lambda sl: as_embedding(
                lyr(sl), sl.stop - sl.start, "embed_lyrics"), tick)))
        audio_emb, lyrics_emb = cache.gather("audio", ua), cache.gather("lyrics", ul)
        ia_t = torch.as_tensor(ia, device=audio_emb.device)
        il_t = torch.as_tensor(il, device=lyrics_emb.device)
        probs = [as_probs(model.head(audio_emb[ia_t[sl]], lyrics_emb[il_t[sl]]), sl.stop - sl.start, n_classes)
                 for sl in _batches(len(masks), HEAD_BATCH_SIZE)]
        return np.concatenate(probs)

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
        if self.adaptive:
            return self._explain_adaptive(model, af, lf, labels, top_labels, modality, seed, progress)
        t0 = time.perf_counter()
        plan = self.plan(af, lf, modality, seed)
        t1 = time.perf_counter()
        probs, rows = self.predict(model, af, lf, plan.masks, progress)
        t2 = time.perf_counter()
        exp = self.fit(plan, probs, model.classes, labels, top_labels, model_rows=rows)
        exp.timings.update(plan_s=t1 - t0, predict_s=t2 - t1, fit_s=time.perf_counter() - t2)
        return exp

    # ------------------------------------------------------------------ num_samples="auto"

    def schedule(self, lf: LyricsFactorization, modality: str = "both", model=None) -> list[tuple[int, tuple[int, int] | None]]:
        """The rounds of ``num_samples="auto"``: ``(num_samples, grid_size or None)``,
        growing, capped at ``max_samples``."""
        if self.design_for(model) == "grid" and Modality.parse(modality) is Modality.BOTH and lf.n_features:
            # 16 joint rows per half-mask pair drawn: the head is cheap, the encoders are not
            steps = [(min(g * g, 16 * g, self.max_samples), (g, g)) for g in AUTO_GRID_SIDES]
        else:
            steps = [(min(n, self.max_samples), None) for n in AUTO_SCHEDULE]
        out = []
        for step in steps:
            if not out or step[0] > out[-1][0]:
                out.append(step)
        return out

    def sample_until_stable(self, model, af: AudioFactorization, lf: LyricsFactorization,
                            labels: "Sequence[int] | Callable[[np.ndarray], Sequence[int]] | None" = None,
                            top_labels: int | None = 1, modality: str = "both", seed: int | None = None,
                            progress: Progress | None = None) -> "Adaptive":
        """``num_samples="auto"``: grow the samples round by round (:meth:`schedule`) until
        the explained labels' top-k is stable under bootstrap (:meth:`bootstrap_stability`
        >= ``stability``) or ``max_samples`` is reached.

        ``labels`` may be a function of the unperturbed probabilities ``[C]`` (the pipeline
        knows which labels it explains only once the model has seen the track).
        """
        cache, rounds = OutputCache(), []
        timings = {"plan_s": 0.0, "predict_s": 0.0, "fit_s": 0.0}
        design = self.design_for(model)
        for n, grid in self.schedule(lf, modality, model):
            t1 = time.perf_counter()
            plan = self.plan(af, lf, modality, seed, num_samples=n, grid_size=grid, design=design)
            t2 = time.perf_counter()
            probs, _ = self.predict(model, af, lf, plan.masks, progress, cache)
            t3 = time.perf_counter()
            chosen = labels(probs[0]) if callable(labels) else labels
            exp = self.fit(plan, probs, model.classes, chosen, top_labels, model_rows=cache.rows_computed)
            score = self.bootstrap_stability(plan, probs, exp)
            timings["plan_s"] += t2 - t1
            timings["predict_s"] += t3 - t2
            timings["fit_s"] += time.perf_counter() - t3
            rounds.append((len(plan.masks), cache.rows_computed, score))
            if score >= self.stability:
                break
        exp = dataclasses.replace(exp, stability=score, rounds=tuple(rounds), timings=timings)
        return Adaptive(plan, probs, exp)

    def _explain_adaptive(self, model, af, lf, labels, top_labels, modality, seed, progress) -> Explanation:
        t0 = time.perf_counter()
        exp = self.sample_until_stable(model, af, lf, labels, top_labels, modality, seed, progress).explanation
        exp.timings["total_s"] = time.perf_counter() - t0
        return exp

    def bootstrap_stability(self, plan: Plan, probs: np.ndarray, exp: Explanation) -> float:
        """Mean top-k Jaccard between each explained label's fit and refits on bootstrap
        resamples of the plan's samples (the worst label counts).

        i.i.d. samples are resampled row by row, foldover samples pair by pair, grid
        samples by half-mask (rows sharing an audio or lyrics half-mask are not
        independent, and resampling rows alone would overstate the stability).
        """
        data = plan.masks[:, plan.columns]
        distances = mask_distances(data)
        n = len(data)
        k = min(self.top_k, data.shape[1])
        rng = np.random.default_rng([plan.seed, 7, n])
        grid = plan.design == "grid"
        if grid:
            n_audio = plan.features.n_audio
            _, ia = unique_rows(plan.masks[:, :n_audio])
            _, il = unique_rows(plan.masks[:, n_audio:])
        worst = 1.0
        for label in exp.labels:
            top = _top_k(exp.fits[label].weights, k)
            scores = []
            for _ in range(self.bootstraps):
                if grid:
                    ca = np.bincount(rng.integers(0, ia.max() + 1, ia.max() + 1), minlength=ia.max() + 1)
                    cl = np.bincount(rng.integers(0, il.max() + 1, il.max() + 1), minlength=il.max() + 1)
                    mult = ca[ia] * cl[il]
                else:  # foldover: a mask and its complement are resampled together
                    groups = np.arange(n) // 2 if plan.design == "foldover" else np.arange(n)
                    g = groups[-1] + 1
                    mult = np.bincount(rng.integers(0, g, g), minlength=g)[groups]
                idx = np.repeat(np.arange(n), mult)
                fit = fit_surrogate(data[idx], probs[idx], label, self.kernel_width, self.num_features,
                                    self.feature_selection, alpha=self.alpha, distances=distances[idx])
                boot = _top_k([(int(plan.columns[i]), w) for i, w in fit.weights], k)
                scores.append(len(top & boot) / len(top | boot))
            worst = min(worst, float(np.mean(scores)))
        return worst


def _top_k(weights, k: int) -> set[int]:
    return {i for i, _ in sorted(weights, key=lambda t: -abs(t[1]))[:k]}


@dataclass(frozen=True)
class ExplainerSpec:
    """A job's explainer settings as one value (it pickles to actors): the stage that
    samples (and, with ``num_samples="auto"``, decides when to stop) and the stage that fits
    the written surrogate build the same :class:`MusicLIME` from it, so the stopping rule
    judges the very surrogate that is written."""
    num_samples: int | str = 1000
    kernel_width: float = 25.0
    feature_selection: str = "auto"
    num_features: int | None = None
    design: str = "auto"
    batch_size: int | str = "auto"

    def build(self, seed: int) -> MusicLIME:
        return MusicLIME(num_samples=self.num_samples, batch_size=self.batch_size, kernel_width=self.kernel_width,
                         feature_selection=self.feature_selection, num_features=self.num_features, seed=seed,
                         design=self.design)
