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
