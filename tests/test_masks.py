import numpy as np
import pytest

from musiclime import sample_masks
from musiclime.masks import unique_rows


def test_same_seed_same_masks_other_seed_other_masks():
    a = sample_masks(300, 40, 9, seed=11)
    assert a.dtype == np.uint8 and a[0].all()
    np.testing.assert_array_equal(a, sample_masks(300, 40, 9, seed=11))
    assert not np.array_equal(a, sample_masks(300, 40, 9, seed=12))


@pytest.mark.parametrize("modality,fixed", [("audio", slice(40, 49)), ("lyrics", slice(0, 40))])
def test_unimodal_keeps_other_columns(modality, fixed):
    m = sample_masks(300, 40, 9, seed=0, modality=modality)
    assert (m[:, fixed] == 1).all()
    varying = np.setdiff1d(np.arange(49), np.arange(49)[fixed])
    assert 0.4 < m[1:, varying].mean() < 0.6


def test_bad_modality_is_clear():
    with pytest.raises(ValueError, match="modality must be one of"):
        sample_masks(10, 4, 4, modality="lyrical")


def test_unique_rows_roundtrip_first_seen_order():
    m = np.array([[1, 1], [0, 1], [1, 1], [0, 0], [0, 1]], np.uint8)
    uniq, inv = unique_rows(m)
    np.testing.assert_array_equal(uniq, [[1, 1], [0, 1], [0, 0]])
    np.testing.assert_array_equal(uniq[inv], m)
    big = sample_masks(2000, 3, 2, seed=0)  # 32 possible rows
    uniq, inv = unique_rows(big)
    assert len(uniq) <= 32
    np.testing.assert_array_equal(uniq[inv], big)
    np.testing.assert_array_equal(uniq[0], big[0])


def test_grid_masks_use_few_half_masks_and_grow_by_prefix():
    from musiclime.masks import sample_grid_masks
    m = sample_grid_masks(1000, 40, 9, grid_size=(100, 50), seed=3)
    assert m.shape == (1000, 49) and m.dtype == np.uint8 and m[0].all()
    assert len(unique_rows(m[:, :40])[0]) <= 100 and len(unique_rows(m[:, 40:])[0]) <= 50
    assert len(unique_rows(m)[0]) == 1000                      # distinct cells, no repeats
    assert 0.4 < m[1:].mean() < 0.6
    np.testing.assert_array_equal(m, sample_grid_masks(1000, 40, 9, (100, 50), seed=3))
    full = sample_grid_masks(10 ** 6, 40, 9, grid_size=(4, 3), seed=3)
    assert full.shape == (12, 49)                              # the whole grid when it is small
    # a larger grid of the same seed starts with the same half-masks
    small = {r.tobytes() for r in unique_rows(sample_grid_masks(64, 40, 9, (8, 8), seed=3)[:, :40])[0]}
    big = {r.tobytes() for r in unique_rows(sample_grid_masks(4096, 40, 9, (64, 64), seed=3)[:, :40])[0]}
    assert small <= big
    with pytest.raises(ValueError, match="grid_size"):
        sample_grid_masks(10, 4, 4, grid_size=(0, 3))


def test_foldover_pairs_each_mask_with_its_complement():
    from musiclime.masks import sample_foldover_masks
    m = sample_foldover_masks(301, 40, 9, seed=2)
    assert m.shape == (301, 49) and m[0].all() and not m[1].any()
    np.testing.assert_array_equal(m[1:300:2], 1 - m[0:300:2])
    # the first masks of each pair are the i.i.d. design's, and a longer draw extends a shorter one
    np.testing.assert_array_equal(m[0::2], sample_masks(151, 40, 9, seed=2))
    np.testing.assert_array_equal(sample_foldover_masks(600, 40, 9, seed=2)[:301], m)
    audio = sample_foldover_masks(20, 40, 9, seed=2, modality="audio")
    assert (audio[:, 40:] == 1).all() and not audio[1, :40].any()
    # +-1 coding: every pairwise product is orthogonal to every main effect
    z = 2.0 * sample_foldover_masks(400, 6, 0, seed=5)[:, :6] - 1
    inter = z[:, 0] * z[:, 1]
    assert np.allclose(z.T @ inter, 0)
