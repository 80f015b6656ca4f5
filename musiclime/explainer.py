"""MusicLIME: joint audio + lyrics perturbation explained by a local linear surrogate.

The roles live apart: :mod:`musiclime.designs` draws the masks (one object per design),
:mod:`musiclime.runner` runs the model over them, :mod:`musiclime.adaptive` decides how
many to draw; :class:`MusicLIME` keeps plan / predict / fit / explain.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from musiclime import designs, presets
from musiclime.errors import InputError
from musiclime.explanation import Explanation
from musiclime.factorization import AudioFactorization, LyricsFactorization
from musiclime.layout import FeatureLayout
from musiclime.masks import Modality, seed_bits
from musiclime.protocol import is_late_fusion
from musiclime.runner import ModelRunner, OutputCache, ProgressFn, auto_batch_size  # noqa: F401  (re-exported)
from musiclime.surrogate import FeatureSelection, Target, fit_surrogate, mask_distances, resolve_target, topk_state

DESIGN_CHOICES = designs.CHOICES
# num_samples="auto" with design="auto": the design measured best per model type
# (bench/bench_sampling.py); a fixed num_samples keeps foldover.
AUTO_DESIGN = {"late_fusion": "orthogonal-grid", "joint": "orthogonal", "fixed": "foldover"}


@dataclass(frozen=True)
class Plan:
    """What will be perturbed for one track: the features, the masks and why.

    ``masks`` is ``uint8 [num_samples, n_audio + n_lyrics]`` over ALL joint features; the
    surrogate is fitted on ``columns`` only (the explained modality's features).
    """
    features: FeatureLayout
    masks: np.ndarray
    columns: np.ndarray
    modality: Modality
    flags: tuple[str, ...]
    seed: int
    design: str = "iid"
    size: designs.Size | None = None

    @property
    def shape(self) -> designs.MaskShape:
        return designs.MaskShape(self.features.n_audio, self.features.n_lyrics, self.modality)

    def clusters(self) -> list[tuple]:
        """The design's independent units, each with the explained columns its side draws."""
        units = designs.get(self.design).clusters(self.masks, self.shape, self.size or designs.Size(len(self.masks)))
        if len(units) == 1:
            return [(units[0], None)]
        audio = self.columns < self.features.n_audio
        balanced = self.design.startswith("orthogonal")
        return [(units[0], audio, balanced), (units[1], ~audio, balanced)]


class MusicLIME:
    """Explains one track of a multimodal model with MusicLIME.

    Args:
        num_samples: perturbations per track, row 0 (the whole input) included; or
            ``"auto"``: sample in rounds (:meth:`designs.SamplingDesign.rounds`)
            until every explained label's top-``top_k`` is separated from the rest with
            ``confidence``, or tied (:mod:`musiclime.adaptive`), or ``max_samples`` is reached.
        design: a name of :data:`musiclime.designs.DESIGNS` (``iid`` is the reference's
            sampling exactly), or ``"auto"``: with ``num_samples="auto"`` the design
            measured best for the model type (:data:`AUTO_DESIGN`: crossed orthogonal
            half-masks for late fusion, folded orthogonal arrays otherwise), with a fixed
            count ``foldover``.
        grid_size: ``(n_audio_masks, n_lyrics_masks)`` for the random ``grid`` design.
        batch_size: rows per model call; ``"auto"`` picks the measured default of the
            device the model runs on.
        kernel_width: LIME kernel width on the cosine distance (reference: 25).
        feature_selection: lime's modes: ``auto``, ``none``, ``forward_selection``,
            ``highest_weights``, ``lasso_path``.
        num_features: features kept per label; None keeps all of the explained modality.
        seed: mask seed, used when ``explain`` gets none.
        alpha: Ridge regularisation of the surrogate.
        target: ``probability`` (the reference's), ``log_odds`` or ``auto``: log-odds,
            except probability under ``design="iid"`` (:func:`musiclime.surrogate.resolve_target`).
        top_k, confidence, tie_tolerance: the stopping rule of ``num_samples="auto"``.
        max_samples: cap of ``num_samples="auto"`` in joint rows (default: the design's).
        quality: a preset of :mod:`musiclime.presets` (``fast``, ``paper``, ``steady``): the
            design, work and target per model type; ``num_samples``, ``design`` and
            ``target`` given here override it. None: 1,000 joint rows, design and target
            ``auto``.
    """

    def __init__(self, num_samples: int | str | None = None, batch_size: int | str = "auto",
                 kernel_width: float = 25, feature_selection: str = "auto",
                 num_features: int | None = None, seed: int = 0, alpha: float = 1.0,
                 design: str | None = None, grid_size: tuple[int, int] | None = None,
                 target: str | None = None, top_k: int = 10, confidence: float = 0.95,
                 tie_tolerance: float = 0.05, max_samples: int | None = None, quality: str | None = None):
        self.preset = presets.get(quality) if quality is not None else None
        if num_samples is None:  # before presets: 1,000 joint rows; else the preset's count, if it fixes one
            num_samples = self.preset.num_samples if self.preset else presets.PAPER_SAMPLES
        design = design or "auto"  # under a preset, the preset's design for the model type
        if target is None:  # a preset's target is the same for every model type
            target = self.preset.target if self.preset else "auto"
        check_settings("auto" if num_samples is None else num_samples, design, batch_size, feature_selection,
                       target, kernel_width, num_features)
        self.adaptive = num_samples == "auto"
        if not 0.5 < confidence < 1:
            raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
        self.num_samples = None if self.adaptive or num_samples is None else int(num_samples)
        self.design, self.grid_size = design, grid_size
        self.top_k, self.confidence, self.tie_tolerance = int(top_k), float(confidence), float(tie_tolerance)
        self.max_samples = max_samples
        self.batch_size = batch_size
        self.kernel_width = float(kernel_width)
        self.feature_selection = FeatureSelection.parse(feature_selection)
        self.num_features = num_features
        self.seed = seed_bits(seed)
        self.alpha = float(alpha)
        self.target = resolve_target(target, design)

    # ------------------------------------------------------------------ the steps

    def design_for(self, model=None) -> str:
        """The mask design used for ``model`` (resolves ``auto`` and the preset's)."""
        if self.design != "auto":
            return self.design
        if self.preset is not None:
            return self.preset.setting(model is not None and is_late_fusion(model)).design
        if not self.adaptive:
            return AUTO_DESIGN["fixed"]
        return AUTO_DESIGN["late_fusion" if model is not None and is_late_fusion(model) else "joint"]

    def plan(self, af: AudioFactorization, lf: LyricsFactorization, modality: str = "both",
             seed: int | None = None, num_samples: int | None = None,
             grid_size: tuple[int, int] | None = None, design: str | None = None,
             size: designs.Size | None = None, model=None) -> Plan:
        """Choose the features and draw the masks (numpy, CPU) with the design's sampler.

        ``size`` (a round of :meth:`designs.SamplingDesign.rounds`) wins over
        ``num_samples``; without either, the explainer's ``num_samples`` (or, when adaptive,
        the design's first round)."""
        modality = Modality.parse(modality)
        flags: list[str] = []
        if lf.n_features == 0:
            if modality is Modality.LYRICS:
                raise InputError("no_lyrics", "modality='lyrics' but the lyrics have no words")
            if modality is Modality.BOTH:
                flags.append("no_lyrics")
                modality = Modality.AUDIO
        seed = self.seed if seed is None else seed_bits(seed)
        fs = FeatureLayout.from_factorizations(af, lf)
        name = design or self.design_for(model)
        sampler = designs.get(name)
        shape = designs.MaskShape(fs.n_audio, fs.n_lyrics, modality)
        if size is None:
            n = num_samples or self.num_samples
            if n is None and not self.adaptive:  # the preset's work, sized for this track
                assert self.preset is not None, "only a preset leaves num_samples open"
                late = model is not None and is_late_fusion(model)
                size = sampler.for_work(self.preset.setting(late).work(late and shape.crossed), shape, late)
            elif n is None:
                size = sampler.rounds(shape, self._max_samples(sampler))[0]
            else:
                size = sampler.size(int(n), shape)
                grid = grid_size or self.grid_size
                if grid is not None and name == "grid":
                    size = designs.Size(size.num_samples, (int(grid[0]), int(grid[1])))
        masks = sampler.sample(shape, size, seed)
        return Plan(fs, masks, fs.columns(modality), modality, tuple(flags), seed, name, size)

    def _max_samples(self, sampler: designs.SamplingDesign) -> int:
        if self.max_samples is not None:
            return int(self.max_samples)
        return designs.MAX_GRID_CELLS if sampler.crossed else designs.IID_SCHEDULE[-1]

    def predict(self, model, af: AudioFactorization, lf: LyricsFactorization, masks: np.ndarray,
                progress: ProgressFn | None = None, cache: OutputCache | None = None) -> tuple[np.ndarray, int]:
        """Model probabilities of every mask row: ``(float64 [N, C], model rows evaluated)``
        (:meth:`musiclime.runner.ModelRunner.predict`)."""
        return ModelRunner(model, self.batch_size).predict(af, lf, masks, progress, cache)

    def fit(self, plan: Plan, probs: np.ndarray, classes: Sequence[str],
            labels: Sequence[int] | None = None, top_labels: int | None = 1,
            model_rows: int = 0) -> Explanation:
        """Fit one surrogate per explained label on the plan's explained columns, with each
        weight's standard error from the design's independent units.

        On one BLAS thread: the same bits wherever it runs (a fit task, or the GPU-stage
        actor whose ``num_samples="auto"`` fit is written as is), whatever threads the process
        has, so weights never depend on the number of actors."""
        from threadpoolctl import threadpool_limits
        with threadpool_limits(limits=1):
            return self._fit(plan, probs, classes, labels, top_labels, model_rows)

    def _fit(self, plan: Plan, probs: np.ndarray, classes: Sequence[str], labels: Sequence[int] | None,
             top_labels: int | None, model_rows: int) -> Explanation:
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
        clusters = plan.clusters()
        fits = {}
        for label in labels:
            fit = fit_surrogate(data, probs, label, self.kernel_width, self.num_features,
                                self.feature_selection, alpha=self.alpha, distances=distances,
                                target=self.target, clusters=clusters)
            # back to joint feature indices
            fits[label] = type(fit)(fit.intercept, [(int(plan.columns[i]), w) for i, w in fit.weights],
                                    fit.score, fit.local_pred, fit.se)
        state, separation = topk_state(fits.values(), self.top_k, self.confidence, self.tie_tolerance)
        return Explanation(classes=list(classes), probabilities=probs[0].copy(), labels=list(labels),
                           top_labels=list(top), features=plan.features, fits=fits,
                           modality=plan.modality.value, flags=plan.flags,
                           num_samples=len(plan.masks), model_rows=model_rows, seed=plan.seed,
                           design=plan.design, target=self.target.value, top_k=self.top_k,
                           topk=state, separation=separation)

    # ------------------------------------------------------------------ the one verb

    def explain(self, model, af: AudioFactorization, lf: LyricsFactorization,
                labels: Sequence[int] | None = None, top_labels: int | None = 1,
                modality: str = "both", seed: int | None = None,
                progress: ProgressFn | None = None) -> Explanation:
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
        ev = self.evaluate(model, af, lf, labels, top_labels, modality, seed, progress)
        if ev.explanation is not None:  # the stopping rule's own fit
            ev.explanation.timings["total_s"] = time.perf_counter() - t0
            return ev.explanation
        t2 = time.perf_counter()
        exp = self.fit(ev.plan, ev.probs, model.classes, labels, top_labels, model_rows=ev.model_rows)
        exp.timings.update(**ev.timings, fit_s=time.perf_counter() - t2)
        return exp

    def evaluate(self, model, af: AudioFactorization, lf: LyricsFactorization,
                 labels: Sequence[int] | Callable[[np.ndarray], Sequence[int]] | None = None,
                 top_labels: int | None = 1, modality: str = "both", seed: int | None = None,
                 progress: ProgressFn | None = None) -> Evaluation:
        """The masks and the model's outputs on them, without the final fit: the GPU stage's
        half of :meth:`explain` (the fit stage does the rest). Under ``num_samples="auto"``
        the rounds run until the top-k is settled, and the stopping fit comes with them
        (``labels`` may then be a function of the unperturbed probabilities ``[C]``)."""
        if self.adaptive:
            from musiclime.adaptive import sample_until_resolved
            res = sample_until_resolved(self, model, af, lf, labels, top_labels, modality, seed, progress)
            return Evaluation(res.plan, res.probs, res.explanation.model_rows, res.explanation, {})
        t0 = time.perf_counter()
        plan = self.plan(af, lf, modality, seed, model=model)  # masks: numpy, CPU, from the seed
        t1 = time.perf_counter()
        probs, rows = self.predict(model, af, lf, plan.masks, progress)
        return Evaluation(plan, probs, rows, None, {"plan_s": t1 - t0, "predict_s": time.perf_counter() - t1})

    def rounds(self, af: AudioFactorization, lf: LyricsFactorization, modality: str = "both",
               model=None) -> list[designs.Size]:
        """The rounds ``num_samples="auto"`` grows through for this track and model."""
        modality = Modality.parse(modality)
        if lf.n_features == 0 and modality is Modality.BOTH:
            modality = Modality.AUDIO
        sampler = designs.get(self.design_for(model))
        return sampler.rounds(designs.MaskShape(af.n_features, lf.n_features, modality), self._max_samples(sampler))


@dataclass(frozen=True)
class Evaluation:
    """What :meth:`MusicLIME.evaluate` returns: the plan, the model's probabilities on its
    masks ``[N, C]``, the model rows computed, and under ``num_samples="auto"`` the fit the
    stopping rule settled on (else None)."""
    plan: Plan
    probs: np.ndarray
    model_rows: int
    explanation: Explanation | None
    timings: dict


def check_settings(num_samples: object, design: str, batch_size: object, feature_selection: str, target: str,
                   kernel_width: float, num_features: int | None) -> None:
    """The explainer's settings, checked in one place for the Python API and the job
    (:class:`ExplainerSpec`): a ValueError naming the setting."""
    from numbers import Integral
    if num_samples != "auto" and not (isinstance(num_samples, Integral) and not isinstance(num_samples, bool)
                                      and int(num_samples) >= 2):
        raise ValueError(f"num_samples must be 'auto' or an int >= 2, got {num_samples!r}")
    if design not in DESIGN_CHOICES:
        raise ValueError(f"design must be one of {DESIGN_CHOICES}, got {design!r}")
    if batch_size != "auto" and not (isinstance(batch_size, Integral) and not isinstance(batch_size, bool)
                                     and int(batch_size) >= 1):
        raise ValueError(f"batch_size must be 'auto' or a positive int, got {batch_size!r}")
    FeatureSelection.parse(feature_selection)
    Target.parse(target)
    if not kernel_width > 0:
        raise ValueError(f"kernel_width must be > 0, got {kernel_width!r}")
    if num_features is not None and num_features < 1:
        raise ValueError(f"num_features must be >= 1 or None, got {num_features!r}")


@dataclass(frozen=True)
class ExplainerSpec:
    """A job's explainer settings as one value (it pickles to actors): the stage that
    samples (and, with ``num_samples="auto"``, decides when to stop) and the stage that fits
    the written surrogate build the same :class:`MusicLIME` from it, so the stopping rule
    judges the very surrogate that is written."""
    num_samples: int | str | None = None
    kernel_width: float = 25.0
    feature_selection: str = "auto"
    num_features: int | None = None
    design: str | None = None
    batch_size: int | str = "auto"
    target: str | None = None
    quality: str | None = None

    def __post_init__(self) -> None:
        self.build(0)  # every setting checked where the explainer checks it

    def build(self, seed: int) -> MusicLIME:
        return MusicLIME(num_samples=self.num_samples, batch_size=self.batch_size, kernel_width=self.kernel_width,
                         feature_selection=self.feature_selection, num_features=self.num_features, seed=seed,
                         design=self.design, target=self.target, quality=self.quality)
