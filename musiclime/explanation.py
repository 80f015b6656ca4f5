"""The result of explaining one track: per-label surrogate weights over named features."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from musiclime.layout import AUDIO, LYRICS, FeatureLayout
from musiclime.surrogate import SurrogateFit

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class Explanation:
    """Per-label local explanations of one track.

    Attributes:
        classes: the model's class names.
        probabilities: ``[C]`` model output on the unperturbed input.
        labels: the explained labels (class indices).
        top_labels: class indices by probability, most probable first.
        features: names and metadata of every joint feature.
        fits: per explained label, its :class:`SurrogateFit`; feature indices are joint
            indices into ``features`` (audio first).
        modality: which modality was perturbed (``both``, ``audio`` or ``lyrics``).
        flags: notes on the input, e.g. ``no_lyrics`` (explained on audio alone).
        num_samples: perturbations drawn (row 0 included).
        model_rows: rows the model evaluated (distinct perturbations).
        seed: the mask seed.
        design: the sampling design (:mod:`musiclime.designs`).
        target: what the surrogates fitted: ``probability`` or ``log_odds``.
        top_k: the k of ``topk`` and ``separation``.
        topk: ``resolved`` (every label's top-k is separated from the rest with the
            explainer's confidence), ``tied`` (the k-th and (k+1)-th are equal within the
            tie tolerance) or ``unresolved`` (:func:`musiclime.surrogate.topk_state`).
        separation: the smallest gap between a label's k-th and (k+1)-th |weight|, in
            standard errors of the gap.
        rounds: with ``num_samples="auto"``, per round ``(num_samples, model_rows so far,
            separation)``.
    """
    classes: list[str]
    probabilities: np.ndarray
    labels: list[int]
    top_labels: list[int]
    features: FeatureLayout
    fits: dict[int, SurrogateFit]
    modality: str
    flags: tuple[str, ...] = ()
    num_samples: int = 0
    model_rows: int = 0
    seed: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    design: str = "iid"
    target: str = "probability"
    top_k: int = 10
    topk: str = "unresolved"
    separation: float = float("nan")
    rounds: tuple[tuple[int, int, float], ...] = ()

    @property
    def topk_resolved(self) -> bool:
        return self.topk == "resolved"

    def _fit(self, label: int) -> SurrogateFit:
        try:
            return self.fits[label]
        except KeyError:
            raise KeyError(f"label {label} was not explained; explained: {self.labels}") from None

    @property
    def intercept(self) -> dict[int, float]:
        return {k: f.intercept for k, f in self.fits.items()}

    @property
    def score(self) -> dict[int, float]:
        return {k: f.score for k, f in self.fits.items()}

    @property
    def local_pred(self) -> dict[int, float]:
        return {k: f.local_pred for k, f in self.fits.items()}

    def as_list(self, label: int, with_se: bool = False) -> list[tuple]:
        """``[(modality, feature_name, weight)]`` by |weight| descending; with ``with_se``,
        ``[(modality, feature_name, weight, weight_se)]``."""
        fs, fit = self.features, self._fit(label)
        if with_se:
            se = fit.se if len(fit.se) == len(fit.weights) else (float("nan"),) * len(fit.weights)
            return [(fs.modality(i), fs.names[i], w, e) for (i, w), e in zip(fit.weights, se)]
        return [(fs.modality(i), fs.names[i], w) for i, w in fit.weights]

    def modality_share(self, label: int) -> dict[str, float]:
        """Shares of the sum of |weight| per modality; they add up to 1 (0/0 gives 0.5/0.5)."""
        tot = {AUDIO: 0.0, LYRICS: 0.0}
        for i, w in self._fit(label).weights:
            tot[self.features.modality(i)] += abs(w)
        s = tot[AUDIO] + tot[LYRICS]
        if s == 0:
            return {AUDIO: 0.5, LYRICS: 0.5}
        return {AUDIO: tot[AUDIO] / s, LYRICS: tot[LYRICS] / s}

    def stem_segment_matrix(self, label: int) -> np.ndarray:
        """Audio weights as ``[n_stems, n_segments]`` (0 where a feature was not selected)."""
        fs = self.features
        out = np.zeros((len(fs.stem_names), fs.n_segments))
        for i, w in self._fit(label).weights:
            if i < fs.n_audio:
                out[fs.stem_segment(i)] = w
        return out

    def to_arrow(self) -> pa.Table:
        """One row per (explained label, selected feature); see ``schemas.explanations``."""
        from schemas.explanations import LOCAL_SCHEMA
        fs = self.features
        cols: dict[str, list] = {n: [] for n in LOCAL_SCHEMA.names}
        for label in self.labels:
            fit = self._fit(label)
            se = fit.se if len(fit.se) == len(fit.weights) else (None,) * len(fit.weights)
            for rank, ((i, w), e) in enumerate(zip(fit.weights, se), start=1):
                audio = i < fs.n_audio
                cols["label"].append(self.classes[label])
                cols["label_index"].append(label)
                cols["modality"].append(fs.modality(i))
                cols["feature"].append(fs.names[i])
                cols["stem"].append(fs.stems[i])
                cols["segment"].append(fs.segments[i])
                cols["start_s"].append(fs.start_s[i])
                cols["end_s"].append(fs.end_s[i])
                cols["token"].append(None if audio else fs.names[i])
                cols["token_index"].append(fs.token_index[i])
                cols["weight"].append(w)
                cols["weight_se"].append(None if e is None or not np.isfinite(e) else e)
                cols["rank"].append(rank)
        import pyarrow as pa
        return pa.Table.from_pydict(cols, schema=LOCAL_SCHEMA)

    def to_text(self, label: int | None = None, k: int = 10, width: int = 24) -> str:
        """A terminal view: probabilities, fit quality and the top ``k`` features as bars."""
        label = self.labels[0] if label is None else label
        fit = self._fit(label)
        lines = [f"{self.classes[label]} (p={self.probabilities[label]:.3f}; surrogate of {self.target} "
                 f"R^2={fit.score:.3f}, intercept={fit.intercept:+.3f}, local pred={fit.local_pred:.3f}; "
                 f"{self.modality}, {self.num_samples} samples, {self.design}; top-{self.top_k} {self.topk})"]
        if self.flags:
            lines.append(f"  flags: {', '.join(self.flags)}")
        share = self.modality_share(label)
        lines.append(f"  share: audio {share[AUDIO]:.0%}, lyrics {share[LYRICS]:.0%}")
        top = self.as_list(label, with_se=True)[:k]
        scale = max((abs(w) for _, _, w, _ in top), default=0) or 1.0
        for mod, name, w, se in top:
            bar = ("+" if w > 0 else "-") * max(1, round(abs(w) / scale * width))
            lines.append(f"  {mod:6s} {name:>16s} {w:+.4f} ±{se:.4f} {bar}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return "\n\n".join(self.to_text(label) for label in self.labels)
