"""The joint feature layout of one track: which columns are audio, which are lyrics, and
what each feature is (stem and segment, or word). The explainer, :class:`Explanation`
and the tables read it from here instead of re-deriving it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from musiclime.masks import Modality, perturbed_columns

if TYPE_CHECKING:
    from musiclime.factorization import AudioFactorization, LyricsFactorization

AUDIO, LYRICS = "audio", "lyrics"


@dataclass(frozen=True)
class FeatureLayout:
    """Names and metadata of the joint features ``[audio..., lyrics...]`` of one track.

    Audio features come first, segment-major (feature ``f`` is segment ``f // n_stems``,
    stem ``f % n_stems``), then one feature per distinct word. Small and picklable: no
    audio, only what designs, tables and reports need per feature.
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
    def from_factorizations(cls, af: AudioFactorization, lf: LyricsFactorization) -> FeatureLayout:
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

    def columns(self, modality: str | Modality = Modality.BOTH) -> np.ndarray:
        """Joint feature indices a modality perturbs (what its surrogate is fitted on)."""
        return np.arange(self.n_features)[perturbed_columns(Modality.parse(modality), self.n_audio, self.n_lyrics)]

    def stem_segment(self, f: int) -> tuple[int, int]:
        """``(stem index, segment)`` of audio feature ``f``."""
        if not 0 <= f < self.n_audio:
            raise IndexError(f"feature {f} is not an audio feature (0..{self.n_audio - 1})")
        seg, stem = divmod(int(f), len(self.stem_names))
        return stem, seg

