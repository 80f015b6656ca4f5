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

import numpy as np

from musiclime.masks import (
    Modality,
    perturbed_columns,
    sample_foldover_masks,
    sample_grid_masks,
    sample_masks,
    unique_rows,
)
from musiclime.orthogonal import (  # noqa: F401  (re-exported: the designs' building blocks)
    hadamard,
    hadamard_order,
    orthogonal_block,
    orthogonal_block_rows,
    orthogonal_masks,
    orthogonal_rows,
    split_blocks,
)

# grid sides of the random grid's rounds, and the joint rows drawn per half-mask pair
GRID_SIDES = (32, 64, 128, 256, 512)
IID_SCHEDULE = (250, 500, 1000, 2000, 4000, 8000)
ORTHOGONAL_BLOCKS = (1, 2, 3, 4)  # auto's rounds: at most 4 blocks, near the paper's budget
MAX_GRID_CELLS = 65536  # joint rows of a crossed orthogonal design (the head runs on each)
# joint rows x features of orthogonal-cross: the fit's design matrix stays under ~64 MB of float64
MAX_CROSS_CELLS = 1 << 23


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

    def work(self, size: Size, shape: MaskShape, late_fusion: bool) -> int:
        """Model work of ``size``: encoder rows (audio + text) on a late-fusion model whose
        two modalities are perturbed, model rows otherwise."""
        if late_fusion and shape.crossed:
            return int(sum(size.grid)) if self.crossed and size.grid else 2 * size.num_samples
        return size.num_samples

    def for_work(self, work: int, shape: MaskShape, late_fusion: bool) -> Size:
        """The largest size whose :meth:`work` is at most ``work`` (at least the smallest)."""
        per = 2 if late_fusion and shape.crossed else 1
        return self.size(max(2, int(work) // per), shape)


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

    def for_work(self, work, shape, late_fusion):
        if not (shape.crossed and late_fusion):
            return super().for_work(work, shape, late_fusion)
        # encoder rows are the sides' sum: step through the fractions at which a side gains a pair
        per = hadamard_order(shape.n_audio + shape.n_lyrics + 1)  # finer than either side's
        k = per
        while sum(self.side_rows(shape, (k + 1) / per)) <= work:
            k += 1
        return self.at(shape, k / per)

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


def cross_pairs(groups_a: list[int], groups_l: list[int], cap_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Joint rows of :class:`OrthogonalCross` as ``(audio row, lyrics row)`` index arrays.

    ``groups_*`` are the mask pairs per group (the constant pair, each block, the partial
    block) of each side. In group g, every pair of the side with more pairs meets ``m``
    pairs of the other, taken cyclically so that each is met about as often; ``m`` is all
    of them unless the full products exceed ``cap_rows``. Each meeting of two pairs gives
    the 4 joint rows of their 2 x 2 product: a half-mask and its complement sum to ones, so
    every audio column stays exactly orthogonal to every lyrics column, whatever is paired."""
    full = sum(4 * a * b for a, b in zip(groups_a, groups_l))
    scale = min(1.0, cap_rows / full) if full else 1.0
    ia: list[np.ndarray] = []
    il: list[np.ndarray] = []
    start_a = start_l = 0
    for a, b in zip(groups_a, groups_l):
        if a and not b or b and not a:  # one side has no pair here: meet the constant pair
            a, b, sa, sl = max(a, 1), max(b, 1), (start_a if a else 0), (start_l if b else 0)
        else:
            sa, sl = start_a, start_l
        many, few = max(a, b), min(a, b)
        m = max(1, min(few, int(few * scale)))
        i = np.repeat(np.arange(many), m)
        j = (i * m + np.tile(np.arange(m), many)) % few
        pa, pl = (i, j) if a >= b else (j, i)
        # the 2 x 2 product of a pair with a pair: (a, l), (a, ~l), (~a, l), (~a, ~l)
        ia.append(2 * (sa + np.repeat(pa, 4)) + np.tile([0, 0, 1, 1], len(pa)))
        il.append(2 * (sl + np.repeat(pl, 4)) + np.tile([0, 1, 0, 1], len(pl)))
        start_a += groups_a[len(ia) - 1]
        start_l += groups_l[len(il) - 1]
    return np.concatenate(ia), np.concatenate(il)


class OrthogonalCross(OrthogonalGrid):
    """Late fusion at large budgets: audio and lyrics folded orthogonal half-designs of the
    same blocks, block b of audio crossed with block b of lyrics only (:func:`cross_pairs`).
    The encoders run once per half-mask, as in :class:`OrthogonalGrid`, and audio stays
    orthogonal to lyrics, but the joint rows (the head's and the fit's) grow with the
    blocks instead of their square, and are capped at :data:`MAX_CROSS_CELLS` cells of the
    fit's matrix (pairs then meet a cyclic subset of the other side's pairs). A fixed
    ``num_samples`` counts joint rows; presets size it by encoder rows (:meth:`for_work`).
    One modality perturbed: :class:`Orthogonal`."""
    name = "orthogonal-cross"  # side_rows, size and for_work are the grid's, over these joint rows

    def _groups(self, shape: MaskShape, blocks: float) -> tuple[list[int], list[int]]:
        out = []
        for width in (shape.n_audio, shape.n_lyrics):
            whole, pairs = split_blocks(blocks, width)
            order = hadamard_order(width + 1)
            out.append([1] + [order] * whole + ([pairs] if pairs else []))
        n = max(len(out[0]), len(out[1]))
        return out[0] + [0] * (n - len(out[0])), out[1] + [0] * (n - len(out[1]))

    def _rows(self, shape: MaskShape, blocks: float) -> tuple[np.ndarray, np.ndarray]:
        cap = max(4096, MAX_CROSS_CELLS // max(1, shape.n_audio + shape.n_lyrics))
        return cross_pairs(*self._groups(shape, blocks), cap)

    def at(self, shape: MaskShape, blocks: float) -> Size:
        if not shape.crossed:
            return Orthogonal().at(shape, blocks)
        sides = (orthogonal_rows(blocks, shape.n_audio), orthogonal_rows(blocks, shape.n_lyrics))
        return Size(len(self._rows(shape, blocks)[0]), sides, blocks)

    def sample(self, shape, size, seed):
        if not shape.crossed:
            return Orthogonal().sample(shape, size, seed)
        audio = orthogonal_masks(size.blocks, shape.n_audio, seed, stream=1)
        lyrics = orthogonal_masks(size.blocks, shape.n_lyrics, seed, stream=2)
        ia, il = self._rows(shape, size.blocks)
        return np.concatenate([audio[ia], lyrics[il]], axis=1)

    def rounds(self, shape, max_samples):
        if not shape.crossed:
            return Orthogonal().rounds(shape, max_samples)
        return [self.at(shape, b) for b in ORTHOGONAL_BLOCKS]

    def clusters(self, masks, shape, size):
        if not shape.crossed:
            return [np.arange(len(masks)) // 2]
        ia, il = self._rows(shape, size.blocks)  # a half-mask and its complement are one draw
        return [ia // 2, il // 2]


DESIGNS: dict[str, SamplingDesign] = {d.name: d for d in (IID(), Foldover(), Grid(), Orthogonal(), OrthogonalGrid(),
                                                          OrthogonalCross())}
"""Every design by name; the CLI's ``--design`` choices are these plus ``auto``."""
CHOICES = ("auto",) + tuple(DESIGNS)


def get(name: str) -> SamplingDesign:
    try:
        return DESIGNS[name]
    except KeyError:
        raise ValueError(f"design must be one of {('auto',) + tuple(DESIGNS)}, got {name!r}") from None
