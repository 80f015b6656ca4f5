"""Lyric words as interpretable features, with lime's ``IndexedString`` semantics (no
torch: :mod:`musiclime.factorization` re-exports them beside the audio factorization)."""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from musiclime.errors import InputError


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
        m = np.asarray(masks.cpu() if hasattr(masks, "cpu") else masks)  # a torch tensor, or anything numpy reads
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
