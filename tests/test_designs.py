"""Sampling designs (musiclime.designs), weight standard errors, the tie-aware stopping rule
and the log-odds target."""
import itertools

import numpy as np
import pytest
import torch

from musiclime import AudioFactorization, LyricsFactorization, MusicLIME, designs
from musiclime.masks import Modality
from musiclime.surrogate import RESOLVED, TIED, UNRESOLVED, SurrogateFit, fit_surrogate, target_values, topk_state

SR, SEG = 8000, 1000
FREQS = (200, 504, 904, 1400)   # one pure tone per stem: a segment's stems are read back exactly
WORDS = [f"w{i}" for i in range(20)]
LYRICS = " ".join(WORDS)


def tone_stems() -> np.ndarray:
    t = np.arange(10 * SEG) / SR
    return np.stack([np.sin(2 * np.pi * f * t) for f in FREQS]).astype(np.float32)


class SyntheticModel:
    """A two-class model of known shape: main effects, pairwise and three-way interactions
    of 40 stem-segments and 20 words, read back from the audio and the text. Late fusion
    (encoders: presence vectors; head: the logistic) or, with ``joint=True``,
    ``predict_proba`` only."""
    classes = ["no", "yes"]
    sample_rate = SR

    def __init__(self, seed=0, joint=False):
        rng = np.random.default_rng(seed)
        p = 60
        self.beta = rng.normal(0, 0.4, p)
        self.beta[[3, 17, 45]] = [2.0, -1.6, 1.3]
        self.pairs = [(i, j, rng.normal(0, 0.5)) for i, j in rng.choice(p, size=(40, 2))]
        self.triples = [(i, j, k, rng.normal(0, 0.5)) for i, j, k in rng.choice(p, size=(25, 3))]
        t = np.arange(SEG) / SR
        self.basis = torch.tensor(np.stack([np.sin(2 * np.pi * f * t) for f in FREQS]) * 2 / SEG)
        if not joint:
            self.embed_audio, self.embed_lyrics, self.head = self._audio, self._lyrics, self._head

    def _audio(self, audio):
        a = torch.as_tensor(audio, dtype=torch.float64).reshape(len(audio), 10, SEG)
        return torch.round(a @ self.basis.T).reshape(len(audio), 40)   # segment-major, like the features

    def _lyrics(self, texts):
        return torch.tensor([[float(w in set(s.split())) for w in WORDS] for s in texts], dtype=torch.float64)

    def _head(self, a, b):
        x = torch.cat([a, b], dim=1).numpy()
        z = x @ self.beta - 1.0
        for i, j, g in self.pairs:
            z += g * x[:, i] * x[:, j]
        for i, j, k, g in self.triples:
            z += g * x[:, i] * x[:, j] * x[:, k]
        p = 1 / (1 + np.exp(-z))
        return np.stack([1 - p, p], axis=1)

    def predict_proba(self, audio, lyrics):
        return self._head(self._audio(audio), self._lyrics(lyrics))


def factorizations():
    return AudioFactorization(tone_stems(), SR, n_segments=10), LyricsFactorization(LYRICS)


def test_model_reads_its_features_back():
    af, lf = factorizations()
    masks = designs.get("iid").sample(designs.MaskShape(40, 20, Modality.BOTH), designs.Size(8), 1)
    m = SyntheticModel()
    got = torch.cat([m._audio(af.compose(masks[:, :40])), m._lyrics(lf.compose(masks[:, 40:]))], dim=1).numpy()
    assert np.array_equal(got, masks)


# ---------------------------------------------------------------- Hadamard and designs

@pytest.mark.parametrize("order", [1, 2, 4, 8, 12, 20, 24, 32, 44, 48, 60, 64, 72, 80, 84, 88, 96, 104, 128, 132, 256])
def test_hadamard_orders(order):
    assert designs.hadamard_order(order) == order
    h = designs.hadamard(order).astype(int)
    assert np.array_equal(h @ h.T, order * np.eye(order, dtype=int)) and (h[:, 0] == 1).all()


def test_hadamard_order_is_smallest_available_at_least():
    for n in range(1, 300):
        o = designs.hadamard_order(n)
        assert o >= n and (o == n or designs.hadamard_order(o) == o)
        designs.hadamard(o)


LAYOUTS = [designs.MaskShape(40, 27, Modality.BOTH), designs.MaskShape(40, 27, Modality.AUDIO),
           designs.MaskShape(40, 27, Modality.LYRICS), designs.MaskShape(40, 0, Modality.AUDIO)]


@pytest.mark.parametrize("name", list(designs.DESIGNS))
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda x: f"{x.n_audio}-{x.n_lyrics}-{x.modality.value}")
def test_design_shapes_determinism_row0(name, layout):
    d = designs.get(name)
    size = d.size(600, layout)
    a, b, c = (d.sample(layout, size, s) for s in (5, 5, 6))
    assert a.dtype == np.uint8 and a.shape == (size.num_samples, 67 if layout.n_lyrics else 40)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert (a[0] == 1).all()
    untouched = np.ones(a.shape[1], bool)
    untouched[layout.perturbed] = False
    assert (a[:, untouched] == 1).all()          # the other modality is kept whole
    units = d.clusters(a, layout, size)
    assert all(len(u) == len(a) for u in units)
    rounds = d.rounds(layout, 65536 if d.crossed else 8000)
    assert [r.num_samples for r in rounds] == sorted({r.num_samples for r in rounds})


@pytest.mark.parametrize("name", ["orthogonal", "orthogonal-grid"])
def test_orthogonal_designs_balanced_orthogonal_folded_and_extending(name):
    layout = designs.MaskShape(40, 27, Modality.BOTH)
    d = designs.get(name)
    one, two = d.rounds(layout, 10 ** 9)[:2]
    small, big = d.sample(layout, one, 3), d.sample(layout, two, 3)
    if name == "orthogonal":
        assert np.array_equal(big[:len(small)], small)          # more blocks extend fewer
        x = 2.0 * small[2:] - 1                                 # the block, +-1 coded
        assert np.array_equal(small[2::2], 1 - small[3::2])     # folded: each row then its complement
    else:
        audio = np.unique(small[:, :40], axis=0)
        assert len(audio) == one.grid[0] and len(np.unique(small[:, 40:], axis=0)) == one.grid[1]
        assert len(small) == one.grid[0] * one.grid[1]          # the full product
        x = 2.0 * small - 1
    assert np.abs(x.sum(axis=0)).max() <= 2 * len(x) / 40        # balanced columns
    gram = x.T @ x
    assert np.abs(gram - np.diag(np.diag(gram))).max() <= 2 * len(x) / 40


@pytest.mark.parametrize("name", ["orthogonal", "orthogonal-grid"])
def test_a_fixed_size_takes_pairs_of_the_next_block(name):
    """Between whole blocks, a fixed num_samples takes as many (mask, complement) pairs of
    the next block as fit: the design extends the whole blocks', stays folded, and asking
    for its own size gives it back."""
    layout = designs.MaskShape(40, 27, Modality.BOTH)
    d = designs.get(name)
    one, two = d.at(layout, 1), d.at(layout, 2)
    assert d.size(one.num_samples + 1, layout).num_samples == one.num_samples
    whole = d.sample(layout, one, 3)
    seen = set()
    step = (two.num_samples - one.num_samples) // 7
    for n in range(one.num_samples + step, two.num_samples, step):
        size = d.size(n, layout)
        assert one.num_samples < size.num_samples <= n and d.size(size.num_samples, layout).num_samples == size.num_samples
        masks = d.sample(layout, size, 3)
        assert masks.shape == (size.num_samples, 67) and np.array_equal(masks, d.sample(layout, size, 3))
        if name == "orthogonal":
            assert n - size.num_samples < 2                      # every pair that fits
            sides = [(masks, whole)]
        else:
            assert one.grid < size.grid < two.grid and size.grid[0] * size.grid[1] == len(masks)
            sides = [(masks[::size.grid[1], :40], whole[::one.grid[1], :40]),
                     (masks[:size.grid[1], 40:], whole[:one.grid[1], 40:])]
        for got, prefix in sides:
            assert np.array_equal(got[:len(prefix)], prefix)     # it extends the whole block
            assert np.array_equal(got[2::2], 1 - got[3::2])      # still folded
        seen.add(size.num_samples)
    assert len(seen) >= 5


def test_orthogonal_block_exact():
    block = designs.orthogonal_block(40, np.random.default_rng(0))
    x = 2.0 * block - 1
    assert block.shape == (88, 40)
    assert np.array_equal(x.T @ x, 88 * np.eye(40)) and (x.sum(axis=0) == 0).all()


def test_unknown_design_is_refused():
    with pytest.raises(ValueError, match="orthogonal-grid"):
        MusicLIME(design="latin-square")


# ---------------------------------------------------------------- weight_se calibration

CALIBRATION = [("iid", dict(num_samples=400), False, "probability"), ("iid", dict(num_samples=400), False, "log_odds"),
               ("foldover", dict(num_samples=400), False, "probability"),
               ("foldover", dict(num_samples=400), False, "log_odds"),
               ("orthogonal", dict(num_samples=258), True, "auto"), ("orthogonal-grid", dict(num_samples=2), False, "auto")]


@pytest.mark.parametrize("design,kwargs,joint,target", CALIBRATION, ids=[f"{c[0]}-{c[3]}" for c in CALIBRATION])
def test_weight_se_is_calibrated_over_50_seeds(design, kwargs, joint, target):
    """Over 50 seeds, each top-10 weight's standard deviation is within 25% of the mean
    standard error the fits reported (i.i.d. and foldover, either target: the estimator's
    own assumptions). Orthogonal designs average out more than the unit-level estimator can
    see (a feature's three-way interactions with pairs of the same half-design cancel
    exactly: pairwise products of its columns sum to zero), so their errors are
    conservative for the weights with such interactions: never more than 25% too small,
    and no weight's error overstated more than 5x (measured: up to 4x for the crossed
    design on log-odds; docs/explain.md 'Error bars')."""
    af, lf = factorizations()
    model = SyntheticModel(seed=1, joint=joint)
    weights, ses = [], []
    for seed in range(50):
        exp = MusicLIME(design=design, seed=seed, target=target, **kwargs).explain(model, af, lf, labels=[1])
        got = {n: (w, s) for _, n, w, s in exp.as_list(1, with_se=True)}
        names = sorted(got)
        weights.append([got[n][0] for n in names])
        ses.append([got[n][1] for n in names])
    weights, ses = np.array(weights), np.array(ses)
    top = np.argsort(-np.abs(weights.mean(axis=0)))[:10]
    ratio = weights[:, top].std(axis=0, ddof=1) / ses[:, top].mean(axis=0)
    if design in ("iid", "foldover"):
        assert ((ratio > 0.75) & (ratio < 1.25)).all(), ratio
    else:
        assert (ratio < 1.25).all() and (ratio > 0.2).all(), ratio


def test_weight_se_in_tables_and_views():
    af, lf = factorizations()
    exp = MusicLIME(num_samples=300, seed=0).explain(SyntheticModel(), af, lf, labels=[1])
    table = exp.to_arrow()
    assert "weight_se" in table.column_names
    se = np.array(table.column("weight_se").to_pylist(), dtype=float)
    assert np.isfinite(se).all() and (se > 0).all()
    assert [r[3] for r in exp.as_list(1, with_se=True)] == pytest.approx(list(se))
    assert "±" in exp.to_text(1)


# ---------------------------------------------------------------- the stopping rule

def fit_of(weights, se):
    return SurrogateFit(0.0, list(enumerate(weights)), 0.5, 0.5, tuple(se))


def test_topk_state_resolved_tied_unresolved():
    w = [1.0, 0.9, 0.8, 0.2]
    assert topk_state([fit_of(w, [0.01] * 4)], k=3) == (RESOLVED, pytest.approx(0.6 / np.hypot(0.01, 0.01)))
    # 3rd and 4th nearly equal and known precisely: tied, more samples would not help
    assert topk_state([fit_of([1.0, 0.9, 0.5, 0.499], [0.001] * 4)], k=3)[0] == TIED
    # a gap smaller than its uncertainty: unresolved
    assert topk_state([fit_of([1.0, 0.9, 0.5, 0.4], [0.2] * 4)], k=3)[0] == UNRESOLVED
    # one unresolved label keeps sampling going; no SE: unresolved
    assert topk_state([fit_of(w, [0.01] * 4), fit_of([1.0, 0.9, 0.5, 0.4], [0.2] * 4)], k=3)[0] == UNRESOLVED
    assert topk_state([fit_of(w, [np.nan] * 4)], k=3)[0] == UNRESOLVED
    assert topk_state([fit_of(w, [0.3] * 4)], k=4) == (RESOLVED, float("inf"))   # nothing beyond the top-k


class Planted(SyntheticModel):
    """Only 3 features matter, far apart: the top-3 resolves at once."""

    def __init__(self, joint=False):
        super().__init__(joint=joint)
        self.beta = np.zeros(60)
        self.beta[[3, 17, 45]] = [3.0, -2.0, 1.0]
        self.pairs, self.triples = [(3, 45, 0.3)], [(1, 2, 50, 0.2)]


def test_auto_stops_when_resolved_and_runs_on_when_not():
    af, lf = factorizations()
    clear = MusicLIME(num_samples="auto", top_k=3, seed=0).explain(Planted(), af, lf, labels=[1])
    assert clear.design == "orthogonal-grid" and clear.topk == RESOLVED and len(clear.rounds) == 1
    assert {n for _, n, _ in clear.as_list(1)[:3]} == {"other@0", "drums@4", "w5"}
    hard = MusicLIME(num_samples="auto", top_k=10, seed=0, tie_tolerance=0).explain(SyntheticModel(), af, lf, labels=[1])
    seps = [r[2] for r in hard.rounds]
    assert len(hard.rounds) > 1 and hard.model_rows > clear.model_rows
    assert hard.topk == RESOLVED or len(hard.rounds) == len(MusicLIME(num_samples="auto").rounds(af, lf, model=SyntheticModel()))
    assert all(np.isnan(s) or s < 1.645 for s in seps[:-1])       # it stopped at the first resolved round
    joint = MusicLIME(num_samples="auto", top_k=3, seed=0).explain(Planted(joint=True), af, lf, labels=[1])
    assert joint.design == "orthogonal" and joint.topk == RESOLVED


def test_stopping_judges_the_written_surrogate():
    """The pipeline refits the final plan in another stage: same weights, same verdict."""
    af, lf = factorizations()
    from musiclime.adaptive import sample_until_resolved
    ex = MusicLIME(num_samples="auto", top_k=3, seed=4)
    res = sample_until_resolved(ex, Planted(), af, lf, labels=[1])
    again = ex.fit(res.plan, res.probs, Planted.classes, labels=[1], top_labels=None)
    assert again.as_list(1, with_se=True) == res.explanation.as_list(1, with_se=True)
    assert again.topk == res.explanation.topk


# ---------------------------------------------------------------- target

def test_log_odds_target():
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 2, (300, 6)).astype(np.uint8)
    masks[0] = 1
    z = masks @ np.array([3.0, -2.0, 0.0, 0.0, 1.0, 0.0]) - 1
    p = 1 / (1 + np.exp(-z))
    probs = np.stack([1 - p, p], axis=1)
    np.testing.assert_allclose(target_values(probs, 1, "log_odds"), z, atol=1e-9)
    fit = fit_surrogate(masks, probs, 1, target="log_odds", alpha=1e-9, feature_selection="none")
    assert dict(fit.weights)[0] == pytest.approx(3.0, abs=1e-6) and fit.score == pytest.approx(1.0)
    sat = np.stack([np.zeros(300), np.ones(300)], axis=1)      # a saturated model: clipped, finite
    assert np.isfinite(target_values(sat, 1, "log_odds")).all()
    af, lf = factorizations()
    exp = MusicLIME(num_samples=200, target="log_odds").explain(SyntheticModel(), af, lf, labels=[1])
    assert exp.target == "log_odds" and "log_odds" in exp.to_text(1)


def test_auto_target_is_log_odds_except_under_the_reference_design():
    from musiclime.surrogate import Target, resolve_target
    assert resolve_target("auto", "iid") is Target.PROBABILITY
    assert {resolve_target("auto", d) for d in ("auto", "foldover", "orthogonal", "grid")} == {Target.LOG_ODDS}
    assert resolve_target("probability", "orthogonal") is Target.PROBABILITY
    assert resolve_target("log_odds", "iid") is Target.LOG_ODDS
    assert MusicLIME().target is Target.LOG_ODDS and MusicLIME(design="iid").target is Target.PROBABILITY
    af, lf = factorizations()
    exp = MusicLIME(num_samples=200).explain(SyntheticModel(), af, lf, labels=[1])
    assert exp.target == "log_odds"
    # a resume compares the fitted target, not the word auto: an older run's auto (probability)
    # is not mistaken for this one's
    from pipeline.config import ExplainConfig
    base = dict(catalogue="c.parquet", model="m", out="o")
    assert ExplainConfig(**base).settings()["target"] == "log_odds"
    assert ExplainConfig(**base, design="iid").settings()["target"] == "probability"
    assert (ExplainConfig(**base).config_hash("m") == ExplainConfig(**base, target="log_odds").config_hash("m")
            != ExplainConfig(**base, target="probability").config_hash("m"))


def test_iid_design_stays_the_reference():
    from musiclime.masks import sample_masks
    af, lf = factorizations()
    ex = MusicLIME(num_samples=300, design="iid", seed=9)
    plan = ex.plan(af, lf)
    assert np.array_equal(plan.masks, sample_masks(300, 40, 20, 9)) and ex.target.value == "probability"


def test_grid_pairs_share_units():
    layout = designs.MaskShape(40, 20, Modality.BOTH)
    d = designs.get("orthogonal-grid")
    size = d.rounds(layout, 10 ** 9)[0]
    masks = d.sample(layout, size, 0)
    ua, ul = d.clusters(masks, layout, size)
    for u, cols in ((ua, slice(0, 40)), (ul, slice(40, 60))):
        for g in np.unique(u)[:5]:
            half = np.unique(masks[u == g][:, cols], axis=0)
            assert len(half) == 2 and np.array_equal(half[0], 1 - half[1])   # a half-mask and its complement
    assert len(list(itertools.islice(np.unique(ua), 100))) == size.grid[0] // 2


# ---------------------------------------------------------------- the precision model of bench_precision

def test_precision_model_of_the_stability_goal():
    """bench/bench_precision.py's error model: separated weights are stable at any N; near
    ties need more samples, and the N a goal needs is read off the curve."""
    from bench.bench_precision import curve, inverse, simulate
    rng = np.random.default_rng(0)
    apart = np.r_[np.arange(20, 10, -1.0), np.zeros(30)]
    assert simulate(apart, np.full(40, 0.05), 250, 50, rng) == (1.0, 1.0)
    tied = np.r_[np.linspace(1.0, 0.5, 9), 0.3, 0.27, 0.24, np.linspace(0.15, 0.0, 28)]
    track = {"ref": tied.tolist(), "se": [0.1] * 40}
    rows = curve([track], reps=200)
    stab = [r["stability_median"] for r in rows]
    assert stab[0] < 0.8 and stab[-1] > 0.95 and all(b >= a - 0.02 for a, b in zip(stab, stab[1:]))
    n = inverse(rows, "stability_median", 0.9)
    assert rows[0]["n"] < n < rows[-1]["n"]
    i = next(i for i, r in enumerate(rows) if r["n"] >= n)
    assert rows[i - 1]["stability_median"] < 0.9 <= rows[i]["stability_median"]
    assert inverse(rows, "stability_median", 1.01) is None
