"""Interpretable components of a track: audio stem-segments and lyric words.

A factorization names its components (the interpretable features) and composes a model
input from any subset of them, given as a binary mask. Both compose whole batches of
masks at once.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from musiclime.errors import InputError

# The stems every separator yields and the feature order uses: the one definition.
STEM_NAMES: tuple[str, ...] = ("vocals", "drums", "bass", "other")
# Below this peak amplitude a whole track counts as digital silence (about -120 dBFS).
SILENCE_PEAK = 1e-6


def _as_mask_tensor(masks, n_features: int, device: torch.device) -> torch.Tensor:
    """Masks ``[B, n_features]`` of 0/1 (numpy or torch) as float32 on ``device``."""
    m = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks)
    if m.ndim != 2 or m.shape[1] != n_features:
        raise InputError("bad_mask_shape",
                         f"masks must be [B, {n_features}], got {tuple(m.shape)}")
    return m.to(device=device, dtype=torch.float32)


class AudioFactorization:
    """Stems x temporal segments of one track, composed by one batched op.

    Args:
        stems: ``[n_stems, n_samples]`` mono stems (numpy or torch). A torch tensor stays
            on its device (CPU or CUDA); numpy goes to ``device`` (default CPU).
        sample_rate: Hz.
        n_segments: equal temporal segments; the explained length is
            ``n_samples // n_segments * n_segments`` samples (the tail is not explained).
        stem_names: one name per stem row.
        device: where numpy stems are placed.
        allow_silent: accept silence (a stand-in for audio the model never hears).

    Feature ``f`` is ``(segment, stem) = divmod(f, n_stems)`` (segment-major, like the
    reference), named ``f"{stem}@{segment}"``.

    Raises:
        InputError: zero-length audio (``empty_audio``), fewer samples than segments
            (``too_short``), NaN or inf (``nonfinite_audio``), every stem silent
            (``silent_audio``), a stems array that is not 2-D (``bad_stems``).
    """

    def __init__(self, stems, sample_rate: int, n_segments: int = 10,
                 stem_names: Sequence[str] = STEM_NAMES, device: str | torch.device | None = None,
                 allow_silent: bool = False):
        if not isinstance(stems, torch.Tensor):
            stems = torch.from_numpy(np.ascontiguousarray(np.asarray(stems, dtype=np.float32)))
            if device is not None:
                stems = stems.to(device)
        stems = stems.to(torch.float32)
        if stems.ndim != 2:
            raise InputError("bad_stems", f"stems must be [n_stems, n_samples] (mono), got shape "
                                          f"{tuple(stems.shape)}; downmix channels first")
        if len(stem_names) != stems.shape[0]:
            raise InputError("bad_stems", f"{stems.shape[0]} stems but {len(stem_names)} stem names")
        if int(n_segments) < 1:
            raise InputError("bad_segments", f"n_segments must be >= 1, got {n_segments}")
        if int(sample_rate) <= 0:
            raise InputError("bad_sample_rate", f"sample_rate must be positive, got {sample_rate}")
        n_samples = stems.shape[1]
        if n_samples == 0:
            raise InputError("empty_audio", "the audio has zero samples")
        if n_samples < n_segments:
            raise InputError("too_short", f"{n_samples} samples cannot be cut into "
                                          f"{n_segments} segments")
        if not bool(torch.isfinite(stems).all()):
            raise InputError("nonfinite_audio", "the stems contain NaN or inf")
        peaks = stems.abs().amax(dim=1)
        if bool((peaks <= SILENCE_PEAK).all()) and not allow_silent:
            raise InputError("silent_audio", "every stem is silent")
        self.sample_rate = int(sample_rate)
        self.n_segments = int(n_segments)
        self.stem_names = tuple(stem_names)
        self.segment_length = n_samples // self.n_segments
        self.explained_length = self.segment_length * self.n_segments
        self.stems = stems
        # [n_segments, n_stems, seg_len]: the layout compose multiplies against.
        self._blocks = (stems[:, :self.explained_length]
                        .reshape(len(self.stem_names), self.n_segments, self.segment_length)
                        .transpose(0, 1).contiguous())
        self.silent_stems = tuple(n for n, p in zip(self.stem_names, peaks.tolist())
                                  if p <= SILENCE_PEAK)

    @classmethod
    def time_only(cls, audio, sample_rate: int, n_segments: int = 10,
                  device: str | torch.device | None = None) -> AudioFactorization:
        """Segments of the unseparated mix: one stem named ``mix``. ``audio``: ``[n_samples]``."""
        a = audio if isinstance(audio, torch.Tensor) else torch.as_tensor(np.asarray(audio, np.float32))
        return cls(a.reshape(1, -1), sample_rate, n_segments, ("mix",), device)

    @property
    def device(self) -> torch.device:
        return self.stems.device

    @property
    def n_stems(self) -> int:
        return len(self.stem_names)

    @property
    def n_features(self) -> int:
        return self.n_stems * self.n_segments

    @property
    def feature_names(self) -> list[str]:
        return [f"{stem}@{seg}" for seg in range(self.n_segments) for stem in self.stem_names]

    @property
    def segments(self) -> list[tuple[int, int]]:
        """``[(start_sample, end_sample), ...]`` per segment."""
        L = self.segment_length
        return [(g * L, (g + 1) * L) for g in range(self.n_segments)]

    def feature_info(self, f: int) -> tuple[str, int, float, float]:
        """``(stem, segment, start_s, end_s)`` of feature ``f``."""
        seg, stem = divmod(int(f), self.n_stems)
        a, e = self.segments[seg]
        return self.stem_names[stem], seg, a / self.sample_rate, e / self.sample_rate

    def to(self, device: str | torch.device) -> AudioFactorization:
        """The same factorization with its stems on ``device``."""
        return AudioFactorization(self.stems.to(device), self.sample_rate, self.n_segments,
                                  self.stem_names)

    def compose(self, masks) -> torch.Tensor:
        """Sum of the kept stem-segments.

        Args:
            masks: ``[B, n_features]`` of 0/1, numpy or torch.
        Returns:
            ``torch.float32 [B, explained_length]`` on the stems' device.
        """
        m = _as_mask_tensor(masks, self.n_features, self.device)
        B = m.shape[0]
        # [n_segments, B, n_stems] @ [n_segments, n_stems, seg_len] -> [n_segments, B, seg_len]
        m = m.reshape(B, self.n_segments, self.n_stems).transpose(0, 1)
        out = torch.bmm(m, self._blocks)
        return out.transpose(0, 1).reshape(B, self.explained_length)

    def full(self) -> torch.Tensor:
        """The unperturbed explained audio, ``[1, explained_length]``."""
        return self.compose(torch.ones(1, self.n_features, device=self.device))


# the lyrics' words need no torch: a page that colours them (musiclime serve) imports only these
from musiclime.words import LyricsFactorization, truncate_words  # noqa: E402

__all__ = ["STEM_NAMES", "SILENCE_PEAK", "AudioFactorization", "LyricsFactorization", "truncate_words"]
