"""Sampling designs: how the perturbation masks of one track are drawn.

Each design is one object in :data:`DESIGNS` (adding a design touches this file only): it
draws the masks for a requested size, says which rows are independent draws (the units the
weights' standard errors and the bootstrap resample), and lists the rounds
``num_samples="auto"`` grows through.

Why orthogonal designs: with the reference kernel every sample weight lies in
[0.9992, 1], so the surrogate is in effect an unweighted least-squares fit of main effects
on on/off masks. Its target, the fit on infinitely many i.i.d. masks, is the model's
first-order Walsh (main-effect) coefficients. A folded orthogonal array estimates them
with no leakage from the other main effects (columns orthogonal) nor from any pairwise
interaction (the foldover), where i.i.d. masks pay for both with variance.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from musiclime.masks import (
    Modality,
    perturbed_columns,
    sample_foldover_masks,
    sample_grid_masks,
    sample_masks,
    seed_bits,
    unique_rows,
)

# grid sides of the random grid's rounds, and the joint rows drawn per half-mask pair
GRID_SIDES = (32, 64, 128, 256, 512)
IID_SCHEDULE = (250, 500, 1000, 2000, 4000, 8000)
ORTHOGONAL_BLOCKS = (1, 2, 3, 4)  # auto's rounds: at most 4 blocks, near the paper's budget
MAX_GRID_CELLS = 65536  # joint rows of a crossed orthogonal design (the head runs on each)


# ---------------------------------------------------------------------- Hadamard matrices

def _is_prime(q: int) -> bool:
    return q > 1 and all(q % d for d in range(2, int(q ** 0.5) + 1))


@cache
def hadamard_order(at_least: int) -> int:
    """The smallest Hadamard order >= ``at_least`` that :func:`hadamard` builds: 1, 2, and
    (q + 1) * 2^k for primes q = 3 mod 4 (Paley I with Sylvester doubling)."""
    n = max(1, int(at_least))
    while True:
        if n in (1, 2):
            return n
        m = n
        while m % 2 == 0 and m > 4:
            if _is_prime(m - 1) and (m - 1) % 4 == 3:
                return n
            m //= 2
        if (_is_prime(m - 1) and (m - 1) % 4 == 3) or m in (1, 2, 4):
            return n
        n += 1


@cache
def hadamard(order: int) -> np.ndarray:
    """A normalized Hadamard matrix ``int8 [order, order]`` (``H @ H.T == order * I``, first
    column all +1) of an order :func:`hadamard_order` returns."""
    if order in (1, 2):
        h = np.array([[1]], dtype=np.int64) if order == 1 else np.array([[1, 1], [1, -1]])
    elif order % 2 == 0 and _is_prime(order - 1) and (order - 1) % 4 == 3:
        q = order - 1
        squares = {(x * x) % q for x in range(1, q)}
        chi = np.array([0] + [1 if d in squares else -1 for d in range(1, q)])
        jacobsthal = chi[(np.arange(q)[None, :] - np.arange(q)[:, None]) % q]
        s = np.zeros((order, order), dtype=np.int64)
        s[0, 1:], s[1:, 0], s[1:, 1:] = 1, -1, jacobsthal
        h = s + np.eye(order, dtype=np.int64)
    elif order % 2 == 0 and order >= 4:
        half = hadamard(order // 2).astype(np.int64)
        h = np.block([[half, half], [half, -half]])
    else:
        raise ValueError(f"no Hadamard construction here for order {order}")
    h = h * h[:, :1]                                 # first column all +1
    if not np.array_equal(h @ h.T, order * np.eye(order, dtype=np.int64)):
        raise AssertionError(f"Hadamard construction of order {order} failed")
    return h.astype(np.int8)


def orthogonal_block(width: int, rng: np.random.Generator) -> np.ndarray:
    """One randomized folded orthogonal array: ``uint8 [2 * order, width]``.

    ``width`` columns drawn at random from a normalized Hadamard matrix of the smallest
    order > ``width`` (its first, constant column dropped), each flipped at random, rows
    shuffled, then every row followed by its complement. Every column is balanced, every
    pair of columns orthogonal (+-1 coding), and a mask and its complement cancel every
    even-order interaction (resolution IV).
    """
    if width == 0:
        return np.ones((2, 0), dtype=np.uint8)
    order = hadamard_order(width + 1)
    h = hadamard(order)[:, 1:]
    cols = rng.permutation(order - 1)[:width]
    signs = rng.choice(np.array([-1, 1], dtype=np.int8), size=width)
    block = (h[rng.permutation(order)][:, cols] * signs) > 0
    out = np.empty((2 * order, width), dtype=np.uint8)
    out[0::2], out[1::2] = block, ~block
    return out


def orthogonal_masks(blocks: float, width: int, seed: int, stream: int = 0) -> np.ndarray:
    """``uint8 [orthogonal_rows(blocks, width), width]``: the all-ones row and its
    complement (row 0 keeps the whole input), then ``int(blocks)`` independently randomized
    :func:`orthogonal_block` s, then, for a fractional ``blocks``, the first
    :func:`split_blocks` pairs of the next one (its rows are shuffled: a random subset,
    balanced pair by pair, orthogonal only on average). Block ``b`` depends only on
    (seed, stream, b), so a design of more blocks extends one of fewer."""
    whole, pairs = split_blocks(blocks, width)
    rows = [np.ones((1, width), np.uint8), np.zeros((1, width), np.uint8)]
    for b in range(whole + (pairs > 0)):
        block = orthogonal_block(width, np.random.default_rng([seed_bits(seed), 11, stream, b]))
        rows.append(block if b < whole else block[:2 * pairs])
    return np.concatenate(rows)


def split_blocks(blocks: float, width: int) -> tuple[int, int]:
    """(whole blocks, mask pairs of the next block) of a possibly fractional ``blocks``: the
    fraction of the next block's ``order`` pairs, rounded down."""
    # fractions are k / order of some order below 10^4: an integer k * order / order' is at
    # least 1e-4 from the next, so 1e-6 absorbs float error only
    whole = int(np.floor(blocks + 1e-6))
    order = hadamard_order(width + 1) if width else 1
    return whole, min(order - 1, max(0, int(np.floor((blocks - whole) * order + 1e-6))))


def orthogonal_rows(blocks: float, width: int) -> int:
    """Rows of :func:`orthogonal_masks`."""
    whole, pairs = split_blocks(blocks, width)
    return 2 + whole * orthogonal_block_rows(width) + 2 * pairs


def orthogonal_block_rows(width: int) -> int:
    return 2 * hadamard_order(width + 1) if width else 2


# ---------------------------------------------------------------------- designs

@dataclass(frozen=True)
class MaskShape:
    """What a design needs to know of a track: feature counts and which modality is
    perturbed (the feature names live in :class:`musiclime.shape.FeatureLayout`)."""
    n_audio: int
    n_lyrics: int
    modality: Modality

    @property
    def perturbed(self) -> slice:
        """The joint columns the modality perturbs."""
        return perturbed_columns(self.modality, self.n_audio, self.n_lyrics)

    @property
    def crossed(self) -> bool:
        """Both modalities are perturbed: audio and lyrics half-masks can be crossed."""
        return self.modality is Modality.BOTH and self.n_audio > 0 and self.n_lyrics > 0


@dataclass(frozen=True)
class Size:
    """A design's size: joint rows, the half-mask counts of crossed designs, and the
    (possibly fractional: :func:`split_blocks`) blocks of orthogonal designs."""
    num_samples: int
    grid: tuple[int, int] | None = None
    blocks: float | None = None


class SamplingDesign:
    """One way of drawing masks. Subclasses set ``name`` and implement the three methods."""
    name = ""
    crossed = False  # True: audio and lyrics half-masks are crossed (late fusion pays per half-mask)
    folded = False   # True: rows come in (mask, complement) pairs

    def size(self, num_samples: int, shape: MaskShape) -> Size:
        """The size a fixed ``num_samples`` asks for."""
        return Size(num_samples)

    def sample(self, shape: MaskShape, size: Size, seed: int) -> np.ndarray:
        """``uint8 [N, n_audio + n_lyrics]``; row 0 all ones; deterministic in the arguments."""
        raise NotImplementedError

    def rounds(self, shape: MaskShape, max_samples: int) -> list[Size]:
        """Growing sizes for ``num_samples="auto"``; each round's masks extend the last's."""
        out: list[Size] = []
        for n in IID_SCHEDULE:
            n = min(n, max_samples)
            if not out or n > out[-1].num_samples:
                out.append(Size(n))
        return out

    def clusters(self, masks: np.ndarray, shape: MaskShape, size: Size) -> list[np.ndarray]:
        """Independent units of the rows: one int array per crossed factor (``[N]`` each;
        rows of one unit share a value). Standard errors and bootstraps resample units."""
        return [np.arange(len(masks)) // 2] if self.folded else [np.arange(len(masks))]


class IID(SamplingDesign):
    """The reference's joint i.i.d. Bernoulli(1/2) masks (:func:`~musiclime.masks.sample_masks`)."""
    name = "iid"

    def sample(self, shape, size, seed):
        return sample_masks(size.num_samples, shape.n_audio, shape.n_lyrics, seed, shape.modality)


class Foldover(SamplingDesign):
    """i.i.d. masks each followed by its complement (:func:`~musiclime.masks.sample_foldover_masks`)."""
    name = "foldover"
    folded = True

    def sample(self, shape, size, seed):
        return sample_foldover_masks(size.num_samples, shape.n_audio, shape.n_lyrics, seed, shape.modality)


class Grid(SamplingDesign):
    """Random audio x lyrics half-mask grid (:func:`~musiclime.masks.sample_grid_masks`);
    i.i.d. when one modality is perturbed."""
    name = "grid"
    crossed = True

    def size(self, num_samples, shape):
        return Size(num_samples, (max(2, num_samples // 4),) * 2)

    def sample(self, shape, size, seed):
        if not shape.crossed:
            return IID().sample(shape, size, seed)
        return sample_grid_masks(size.num_samples, shape.n_audio, shape.n_lyrics, size.grid, seed)

    def rounds(self, shape, max_samples):
        if not shape.crossed:
            return IID().rounds(shape, max_samples)
        # 16 joint rows per half-mask pair drawn: the head is cheap, the encoders are not
        out = []
        for g in GRID_SIDES:
            n = min(g * g, 16 * g, max_samples)
            if not out or n > out[-1].num_samples:
                out.append(Size(n, (g, g)))
        return out

    def clusters(self, masks, shape, size):
        if not shape.crossed:
            return [np.arange(len(masks))]
        _, ia = unique_rows(masks[:, :shape.n_audio])
        _, il = unique_rows(masks[:, shape.n_audio:])
        return [ia, il]


class Orthogonal(SamplingDesign):
    """Randomized folded orthogonal arrays over the perturbed features
    (:func:`orthogonal_masks`): ``2 + blocks * 2 * order`` rows, order the smallest
    Hadamard order above the feature count. A fixed ``num_samples`` fills whole blocks
    (at least one), then as many mask pairs of the next block as fit."""
    name = "orthogonal"
    folded = True

    def _width(self, shape):
        return shape.perturbed.stop - shape.perturbed.start

    def size(self, num_samples, shape):
        width = self._width(shape)
        order = hadamard_order(width + 1) if width else 1
        pairs = max(order, (num_samples - 2) // 2)       # at least one block
        return self.at(shape, pairs // order + (pairs % order) / order)

    def at(self, shape: MaskShape, blocks: float) -> Size:
        """The size of ``blocks`` (possibly fractional) blocks."""
        return Size(orthogonal_rows(blocks, self._width(shape)), blocks=blocks)

    def sample(self, shape, size, seed):
        part = orthogonal_masks(size.blocks, self._width(shape), seed)
        masks = np.ones((len(part), shape.n_audio + shape.n_lyrics), dtype=np.uint8)
        masks[:, shape.perturbed] = part
        return masks

    def rounds(self, shape, max_samples):
        out = [self.at(shape, b) for b in ORTHOGONAL_BLOCKS if self.at(shape, b).num_samples <= max_samples]
        return out or [self.at(shape, 1)]


class OrthogonalGrid(SamplingDesign):
    """Late fusion: every audio half-mask of a folded orthogonal design crossed with every
    lyrics half-mask of another (the full product, ``(2 + b*2*o_a) x (2 + b*2*o_l)`` joint
    rows). The encoders run once per half-mask; the full product keeps the audio columns
    orthogonal to the lyrics columns, so each modality's weights are estimated as if the
    other were averaged out. A fixed ``num_samples`` takes the most blocks (whole, then a
    fraction of the next on both sides alike) whose product fits, at least one. One
    modality perturbed: :class:`Orthogonal`."""
    name = "orthogonal-grid"
    crossed = True
    folded = True

    def side_rows(self, shape: MaskShape, blocks: float) -> tuple[int, int]:
        """Audio and lyrics half-masks (the encoders' rows) of ``blocks`` blocks."""
        return orthogonal_rows(blocks, shape.n_audio), orthogonal_rows(blocks, shape.n_lyrics)

    def at(self, shape: MaskShape, blocks: float) -> Size:
        """The size of ``blocks`` (possibly fractional) blocks."""
        if not shape.crossed:
            return Orthogonal().at(shape, blocks)
        rows = self.side_rows(shape, blocks)
        return Size(int(np.prod(rows)), rows, blocks)

    def size(self, num_samples, shape):
        if not shape.crossed:
            return Orthogonal().size(num_samples, shape)
        # the fractions at which one side gains a pair: the largest that fits wins
        per = max(hadamard_order(shape.n_audio + 1), hadamard_order(shape.n_lyrics + 1))
        k = per
        while self.at(shape, (k + 1) / per).num_samples <= num_samples:
            k += 1
        return self.at(shape, k / per)

    def sample(self, shape, size, seed):
        if not shape.crossed:
            return Orthogonal().sample(shape, size, seed)
        audio = orthogonal_masks(size.blocks, shape.n_audio, seed, stream=1)
        lyrics = orthogonal_masks(size.blocks, shape.n_lyrics, seed, stream=2)
        ia, il = np.divmod(np.arange(len(audio) * len(lyrics)), len(lyrics))
        return np.concatenate([audio[ia], lyrics[il]], axis=1)

    def rounds(self, shape, max_samples):
        if not shape.crossed:
            return Orthogonal().rounds(shape, max_samples)
        out = []
        for b in ORTHOGONAL_BLOCKS:
            size = self.at(shape, b)
            if size.num_samples > min(max_samples, MAX_GRID_CELLS) and out:
                break
            out.append(size)
        return out

    def clusters(self, masks, shape, size):
        if not shape.crossed:
            return [np.arange(len(masks)) // 2]
        # rows are audio-major over the full product; a half-mask and its complement are
        # one draw, so the units are the half-mask pairs of each side
        ia, il = np.divmod(np.arange(len(masks)), size.grid[1])
        return [ia // 2, il // 2]


DESIGNS: dict[str, SamplingDesign] = {d.name: d for d in (IID(), Foldover(), Grid(), Orthogonal(), OrthogonalGrid())}
"""Every design by name; the CLI's ``--design`` choices are these plus ``auto``."""
CHOICES = ("auto",) + tuple(DESIGNS)


def get(name: str) -> SamplingDesign:
    try:
        return DESIGNS[name]
    except KeyError:
        raise ValueError(f"design must be one of {('auto',) + tuple(DESIGNS)}, got {name!r}") from None
