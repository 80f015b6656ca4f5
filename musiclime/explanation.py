"""The result of explaining one track: per-label surrogate weights over named features."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from musiclime.surrogate import SurrogateFit

if TYPE_CHECKING:
    import pyarrow as pa

    from musiclime.factorization import AudioFactorization, LyricsFactorization

AUDIO, LYRICS = "audio", "lyrics"


@dataclass(frozen=True)
class FeatureSpace:
    """Names and metadata of the joint features ``[audio..., lyrics...]`` of one track.

    Small and picklable: no audio, only what tables and reports need per feature.
    """
    n_audio: int
    n_lyrics: int
    names: tuple[str, ...]
    stems: tuple[str | None, ...]
    segments: tuple[int | None, ...]
    start_s: tuple[float | None, ...]
    end_s: tuple[float | None, ...]
    token_index: tuple[int | None, ...]
    stem_names: tuple[str, ...]
    n_segments: int

    @classmethod
    def from_factorizations(cls, af: "AudioFactorization", lf: "LyricsFactorization") -> "FeatureSpace":
        audio = [af.feature_info(f) for f in range(af.n_features)]
        nl = lf.n_features
        return cls(
            n_audio=af.n_features, n_lyrics=nl,
            names=tuple(af.feature_names) + tuple(lf.feature_names),
            stems=tuple(a[0] for a in audio) + (None,) * nl,
            segments=tuple(a[1] for a in audio) + (None,) * nl,
            start_s=tuple(a[2] for a in audio) + (None,) * nl,
            end_s=tuple(a[3] for a in audio) + (None,) * nl,
            token_index=(None,) * af.n_features + tuple(lf.token_index(f) for f in range(nl)),
            stem_names=tuple(af.stem_names), n_segments=af.n_segments)

    @property
    def n_features(self) -> int:
        return self.n_audio + self.n_lyrics

    def modality(self, f: int) -> str:
        return AUDIO if f < self.n_audio else LYRICS


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
        stability: with ``num_samples="auto"``, the bootstrap top-k Jaccard the sampling
            stopped at (None otherwise).
        rounds: with ``num_samples="auto"``, per round ``(num_samples, model_rows so far,
            stability)``.
    """
    classes: list[str]
    probabilities: np.ndarray
    labels: list[int]
    top_labels: list[int]
    features: FeatureSpace
    fits: dict[int, SurrogateFit]
    modality: str
    flags: tuple[str, ...] = ()
    num_samples: int = 0
    model_rows: int = 0
    seed: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    stability: float | None = None
    rounds: tuple[tuple[int, int, float], ...] = ()

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

    def as_list(self, label: int) -> list[tuple[str, str, float]]:
        """``[(modality, feature_name, weight)]`` by |weight| descending."""
        fs = self.features
        return [(fs.modality(i), fs.names[i], w) for i, w in self._fit(label).weights]

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
                seg, stem = divmod(i, len(fs.stem_names))
                out[stem, seg] = w
        return out

    def to_arrow(self) -> "pa.Table":
        """One row per (explained label, selected feature); see ``schemas.explanations``."""
        from schemas.explanations import LOCAL_SCHEMA
        fs = self.features
        cols: dict[str, list] = {n: [] for n in LOCAL_SCHEMA.names}
        for label in self.labels:
            for rank, (i, w) in enumerate(self._fit(label).weights, start=1):
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
                cols["rank"].append(rank)
        import pyarrow as pa
        return pa.Table.from_pydict(cols, schema=LOCAL_SCHEMA)

    def to_text(self, label: int | None = None, k: int = 10, width: int = 24) -> str:
        """A terminal view: probabilities, fit quality and the top ``k`` features as bars."""
        label = self.labels[0] if label is None else label
        fit = self._fit(label)
        lines = [f"{self.classes[label]} (p={self.probabilities[label]:.3f}; surrogate R^2={fit.score:.3f}, "
                 f"intercept={fit.intercept:+.3f}, local pred={fit.local_pred:.3f}; "
                 f"{self.modality}, {self.num_samples} samples)"]
        if self.flags:
            lines.append(f"  flags: {', '.join(self.flags)}")
        share = self.modality_share(label)
        lines.append(f"  share: audio {share[AUDIO]:.0%}, lyrics {share[LYRICS]:.0%}")
        top = self.as_list(label)[:k]
        scale = max((abs(w) for _, _, w in top), default=0) or 1.0
        for mod, name, w in top:
            bar = ("+" if w > 0 else "-") * max(1, round(abs(w) / scale * width))
            lines.append(f"  {mod:6s} {name:>16s} {w:+.4f} {bar}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return "\n\n".join(self.to_text(label) for label in self.labels)
