import numpy as np
import pytest
from lime.lime_text import IndexedString

from musiclime import AudioFactorization, InputError, LyricsFactorization
from tests.toys import SR, planted_stems


def explicit_sum(stems, masks, n_segments):
    n_stems, n = stems.shape
    L = n // n_segments
    out = np.zeros((len(masks), L * n_segments), np.float32)
    for b, row in enumerate(masks):
        for f in np.nonzero(row)[0]:
            seg, stem = divmod(f, n_stems)
            out[b, seg * L:(seg + 1) * L] += stems[stem, seg * L:(seg + 1) * L]
    return out


@pytest.mark.parametrize("n_stems,n_segments,n", [(4, 10, SR * 10 + 3), (2, 7, 1001), (1, 1, 50), (4, 3, 3)])
def test_compose_equals_explicit_sum(n_stems, n_segments, n):
    stems = np.random.default_rng(0).normal(size=(n_stems, n)).astype(np.float32)
    af = AudioFactorization(stems, SR, n_segments, stem_names=[f"s{i}" for i in range(n_stems)])
    masks = np.random.default_rng(1).integers(0, 2, size=(9, n_stems * n_segments))
    np.testing.assert_allclose(af.compose(masks).numpy(), explicit_sum(stems, masks, n_segments), atol=1e-5)
    assert af.explained_length == n // n_segments * n_segments


def test_compose_all_ones_is_the_mix_and_zeros_is_silence():
    stems = planted_stems()
    af = AudioFactorization(stems, SR)
    np.testing.assert_allclose(af.full()[0].numpy(), stems.sum(0), atol=1e-5)
    assert af.compose(np.zeros((2, 40))).abs().max() == 0


def test_time_only_factorization():
    mix = planted_stems().sum(0)
    af = AudioFactorization.time_only(mix, SR, n_segments=5)
    assert af.feature_names == [f"mix@{i}" for i in range(5)]
    m = np.array([[1, 0, 1, 0, 0]])
    np.testing.assert_allclose(af.compose(m).numpy(), explicit_sum(mix[None], m, 5), atol=1e-6)


def test_feature_info_seconds():
    af = AudioFactorization(planted_stems(), SR)
    assert af.feature_info(13) == ("drums", 3, 3.0, 4.0)


@pytest.mark.parametrize("stems,code", [
    (np.zeros((4, 0), np.float32), "empty_audio"),
    (np.zeros((4, 5), np.float32), "too_short"),
    (np.zeros((4, SR), np.float32), "silent_audio"),
    (np.full((4, SR), np.inf, np.float32), "nonfinite_audio"),
    (np.ones((4, 2, SR), np.float32), "bad_stems"),
])
def test_bad_audio_has_a_code(stems, code):
    with pytest.raises(InputError) as e:
        AudioFactorization(stems, SR)
    assert e.value.code == code and code in str(e.value)


def test_one_silent_stem_is_normal():
    stems = planted_stems()
    stems[1] = 0
    af = AudioFactorization(stems, SR)
    assert af.silent_stems == ("drums",)


def test_wrong_mask_width():
    af = AudioFactorization(planted_stems(), SR)
    with pytest.raises(ValueError, match="masks must be"):
        af.compose(np.ones((2, 41)))
    with pytest.raises(ValueError):
        LyricsFactorization("a b").compose(np.ones((2, 3)))


TEXTS = ["Fire, fire! Burn the night; love the fire and the night.",
         "  leading and trailing  ", "", "!!!", "don't stop me now\nI'm having such a good time",
         "Ünïcödé wörds – naïve café, déjà vu", "a_b a-b a.b 42 42"]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("bow", [True, False])
def test_lyrics_equal_lime(text, bow):
    lf = LyricsFactorization(text, bow=bow)
    ref = IndexedString(text, bow=bow, split_expression=r"\W+")
    assert lf.n_features == ref.num_words()
    assert lf.feature_names == [ref.word(i) for i in range(ref.num_words())]
    masks = np.random.default_rng(0).integers(0, 2, size=(25, lf.n_features))
    if lf.n_features == 0 and not bow:
        # lime itself fails here (an empty float index array); nothing to remove anyway
        assert lf.compose(masks) == [text] * 25
        return
    for mask, got in zip(masks, lf.compose(masks)):
        assert got == ref.inverse_removing(np.where(mask == 0)[0])


def test_lyrics_by_line_and_spans():
    text = "la la love\n\nthe night\nla la love\n"
    lf = LyricsFactorization(text, level="line")
    assert lf.feature_names == ["la la love", "the night"]
    assert lf.compose(np.array([[0, 1]])) == ["\n\nthe night\n\n"]
    words = LyricsFactorization(text)
    f = words.feature_names.index("la")
    assert [text[a:e] for a, e in words.spans(f)] == ["la"] * 4
    assert words.token_index(words.feature_names.index("night")) == 4
