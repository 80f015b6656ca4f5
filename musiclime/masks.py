"""Perturbation masks: which features each perturbed sample keeps."""
from __future__ import annotations

import numpy as np

from musiclime.choices import Choice


class Modality(Choice):
    """Which modality an explanation perturbs; the other is kept whole."""
    BOTH = "both"
    AUDIO = "audio"
    LYRICS = "lyrics"



def seed_bits(seed: int) -> int:
    """A seed as the non-negative int numpy's generators take. Seeds are 64 bits; tables
    store them as int64 (warehouses have no unsigned types), so half of the stored values
    are negative: those read as their uint64 twin, and a stored seed gives the same masks
    as the unsigned one it came from."""
    seed = int(seed)
    if not -(1 << 63) <= seed < (1 << 64):
        raise ValueError(f"a seed is 64 bits (int64 or uint64), got {seed}")
    return seed + (1 << 64) if seed < 0 else seed


def perturbed_columns(modality: Modality, n_audio: int, n_lyrics: int) -> slice:
    """The mask columns a modality perturbs (audio columns come first)."""
    return {Modality.BOTH: slice(0, n_audio + n_lyrics),
            Modality.AUDIO: slice(0, n_audio),
            Modality.LYRICS: slice(n_audio, n_audio + n_lyrics)}[modality]


def sample_masks(num_samples: int, n_audio: int, n_lyrics: int, seed: int = 0,
                 modality: str | Modality = "both") -> np.ndarray:
    """Joint i.i.d. Bernoulli(1/2) masks over audio then lyrics features.

    Args:
        num_samples: rows, including row 0 (the unperturbed input).
        n_audio, n_lyrics: feature counts; columns are ``[audio..., lyrics...]``.
        seed: any int >= 0; the masks depend only on it and the arguments.
        modality: ``"both"``, or ``"audio"`` / ``"lyrics"`` to keep the other
            modality's columns at 1.

    Returns:
        ``np.uint8 [num_samples, n_audio + n_lyrics]``; row 0 is all ones.
    """
    modality = Modality.parse(modality)
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if n_audio < 0 or n_lyrics < 0:
        raise ValueError("feature counts must be >= 0")
    rng = np.random.default_rng(seed_bits(seed))
    masks = np.ones((num_samples, n_audio + n_lyrics), dtype=np.uint8)
    cols = perturbed_columns(modality, n_audio, n_lyrics)
    width = cols.stop - cols.start
    if num_samples > 1 and width:
        masks[1:, cols] = rng.integers(0, 2, size=(num_samples - 1, width), dtype=np.uint8)
    return masks


def unique_rows(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows in first-seen order and, per input row, the index of its distinct row.

    ``uniq[inverse] == masks``; evaluating ``uniq`` instead of ``masks`` spends one model
    row per distinct perturbation.
    """
    if masks.shape[1] == 0:
        return masks[:1], np.zeros(len(masks), dtype=np.int64)
    packed = np.packbits(masks.astype(bool), axis=1)
    _, first, inverse = np.unique(packed, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")      # distinct rows by first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return masks[first[order]], rank[inverse.ravel()]


def sample_grid_masks(num_samples: int, n_audio: int, n_lyrics: int, grid_size: tuple[int, int],
                      seed: int = 0) -> np.ndarray:
    """Factorized (grid) design: joint masks built from few distinct half-masks.

    Draws ``n_a`` audio half-masks and ``n_l`` lyrics half-masks (row 0 of each all ones,
    the rest i.i.d. Bernoulli(1/2)) and takes ``num_samples`` cells of their
    ``n_a x n_l`` grid: cell (0, 0) (the whole input) first, the others a seeded random
    subset without replacement (all cells when ``num_samples >= n_a * n_l``). A
    late-fusion model then runs its audio encoder at most ``n_a`` times and its lyrics
    encoder at most ``n_l`` times for all ``num_samples`` joint perturbations.

    The half-masks are drawn for the whole ``grid_size`` before any cell is chosen, so a
    larger grid of the same seed starts with the same half-masks (embeddings computed for
    a smaller grid are reused by a larger one).

    Returns:
        ``np.uint8 [min(num_samples, n_a * n_l), n_audio + n_lyrics]``; row 0 is all ones.
    """
    n_a, n_l = (int(x) for x in grid_size)
    if n_a < 1 or n_l < 1:
        raise ValueError(f"grid_size must be two positive ints, got {grid_size}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    audio = _half_masks(n_a, n_audio, np.random.default_rng([seed_bits(seed), 1]))
    lyrics = _half_masks(n_l, n_lyrics, np.random.default_rng([seed_bits(seed), 2]))
    cells = n_a * n_l
    if num_samples >= cells:
        pick = np.arange(cells)
    else:
        rng = np.random.default_rng([seed_bits(seed), 3, n_a, n_l])
        pick = np.concatenate([[0], 1 + rng.choice(cells - 1, size=num_samples - 1, replace=False)])
    ia, il = np.divmod(pick, n_l)
    return np.concatenate([audio[ia], lyrics[il]], axis=1)


def _half_masks(n: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """``uint8 [n, width]``, row 0 all ones, drawn row by row so that prefixes agree."""
    out = np.ones((n, width), dtype=np.uint8)
    for i in range(1, n):
        out[i] = rng.integers(0, 2, size=width, dtype=np.uint8)
    return out


def sample_foldover_masks(num_samples: int, n_audio: int, n_lyrics: int, seed: int = 0,
                          modality: str | Modality = "both") -> np.ndarray:
    """Foldover (antithetic) design: i.i.d. Bernoulli(1/2) masks, each followed by its
    complement (row 0 all ones, row 1 all zeros in the perturbed columns).

    In +-1 coding a mask and its complement agree on every even-order product of features
    and flip every odd one, so a linear fit's main effects are orthogonal to all pairwise
    (and other even-order) interactions of the model: those stop leaking into the weights.

    Returns:
        ``np.uint8 [num_samples, n_audio + n_lyrics]``; row 0 is all ones.
    """
    modality = Modality.parse(modality)
    half = sample_masks((num_samples + 1) // 2, n_audio, n_lyrics, seed, modality)
    cols = perturbed_columns(modality, n_audio, n_lyrics)
    flipped = half.copy()
    flipped[:, cols] = 1 - flipped[:, cols]
    out = np.empty((2 * len(half), half.shape[1]), dtype=np.uint8)
    out[0::2], out[1::2] = half, flipped
    return out[:num_samples]
