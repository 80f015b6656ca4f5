"""Interpretable components of a track: audio stem-segments and lyric words.

A factorization names its components (the interpretable features) and composes a model
input from any subset of them, given as a binary mask. Both compose whole batches of
masks at once.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class _Tokenization:
    pieces: list[str]            # the text cut into words and separators, in order
    piece_feature: np.ndarray    # int64 [n_pieces]: feature of each piece, -1 for separators
    features: list[str]          # the distinct words (bow) or every word, lime order
    first_piece: list[int]       # piece index of each feature's first occurrence


def truncate_words(text: str, max_words: int, split_expression: str = r"\W+") -> tuple[str, bool]:
    """The longest prefix of ``text`` with at most ``max_words`` distinct words (lime's
    bag-of-words split), and whether anything was cut. Bounds the feature count, so the
    mask matrix and the surrogate stay small whatever a catalogue row holds."""
    if max_words < 0:
        raise ValueError(f"max_words must be >= 0, got {max_words}")
    seen: set[str] = set()
    offset = 0
    # with a capturing group, even indices are words (or empty), odd ones separators
    for i, piece in enumerate(re.split(rf"({split_expression})", text)):
        if i % 2 == 0 and piece and piece not in seen:
            if len(seen) == max_words:
                return text[:offset], True
            seen.add(piece)
        offset += len(piece)
    return text, False


class LyricsFactorization:
    """Words (or lines) of a lyric, with lime's ``IndexedString`` semantics.

    Args:
        text: the lyrics.
        split_expression: regex of separators (lime's default ``\\W+``); ignored for lines.
        bow: bag of words: a repeated word is one feature and removing it removes every
            occurrence (lime's default). Without bow each occurrence is a feature and a
            removed one is replaced by ``mask_string``.
        level: ``"word"`` or ``"line"`` (each distinct non-empty line is a feature).
        mask_string: replacement for removed words when ``bow`` is False.

    ``compose(masks [B, n_features]) -> list[str]`` equals lime's
    ``IndexedString.inverse_removing`` of the zero columns.
    """

    def __init__(self, text: str | None, split_expression: str = r"\W+", bow: bool = True,
                 level: str = "word", mask_string: str = "UNKWORDZ"):
        if level not in ("word", "line"):
            raise ValueError(f"level must be 'word' or 'line', got {level!r}")
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise InputError("bad_lyrics", f"lyrics must be str, got {type(text).__name__}")
        self.text = text
        self.level = level
        self.bow = bow
        self.mask_string = mask_string
        if level == "line":
            split_expression = r"\r?\n"
        self.split_expression = split_expression
        self._tok = self._tokenize(text, split_expression, bow, skip_blank=level == "line")
        starts = np.cumsum([0] + [len(p) for p in self._tok.pieces])
        self._piece_start = starts[:-1]

    @staticmethod
    def _tokenize(text: str, split_expression: str, bow: bool, skip_blank: bool) -> _Tokenization:
        splitter = re.compile(rf"({split_expression})|$")
        pieces = [s for s in splitter.split(text) if s]
        vocab: dict[str, int] = {}
        features: list[str] = []
        first: list[int] = []
        piece_feature = np.full(len(pieces), -1, dtype=np.int64)
        for i, piece in enumerate(pieces):
            if splitter.match(piece) or (skip_blank and not piece.strip()):
                continue  # a separator, or a blank line
            if bow:
                if piece not in vocab:
                    vocab[piece] = len(features)
                    features.append(piece)
                    first.append(i)
                piece_feature[i] = vocab[piece]
            else:
                piece_feature[i] = len(features)
                features.append(piece)
                first.append(i)
        return _Tokenization(pieces, piece_feature, features, first)

    @property
    def n_features(self) -> int:
        return len(self._tok.features)

    @property
    def feature_names(self) -> list[str]:
        return list(self._tok.features)

    def spans(self, f: int) -> list[tuple[int, int]]:
        """Character spans ``[(start, end), ...]`` of every occurrence of feature ``f``."""
        idx = np.nonzero(self._tok.piece_feature == f)[0]
        return [(int(self._piece_start[i]), int(self._piece_start[i]) + len(self._tok.pieces[i]))
                for i in idx]

    def token_index(self, f: int) -> int:
        """Position of feature ``f``'s first occurrence among the text's words (0-based)."""
        is_word = self._tok.piece_feature >= 0
        return int(is_word[:self._tok.first_piece[f]].sum())

    def compose(self, masks) -> list[str]:
        """Perturbed lyrics: ``masks [B, n_features]`` of 0/1 -> ``B`` strings."""
        m = np.asarray(masks.cpu() if isinstance(masks, torch.Tensor) else masks)
        if m.ndim != 2 or m.shape[1] != self.n_features:
            raise InputError("bad_mask_shape",
                             f"lyrics masks must be [B, {self.n_features}], got {m.shape}")
        pieces = self._tok.pieces
        pf = self._tok.piece_feature
        is_sep = pf < 0
        # keep[b, i]: piece i survives mask b (separators always do)
        keep = np.ones((m.shape[0], len(pieces)), dtype=bool)
        if self.n_features:
            keep[:, ~is_sep] = m[:, pf[~is_sep]] != 0
        if self.bow:
            return ["".join(p for p, k in zip(pieces, row) if k) for row in keep]
        return ["".join(p if k else self.mask_string for p, k in zip(pieces, row)) for row in keep]
