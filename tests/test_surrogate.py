import numpy as np
import pytest
import sklearn.metrics
from lime.lime_base import LimeBase

from musiclime import fit_surrogate


def lime_fit(data, labels, label, k, selection):
    distances = sklearn.metrics.pairwise_distances(data, data[0].reshape(1, -1), metric="cosine").ravel()
    base = LimeBase(lambda d: np.sqrt(np.exp(-(d ** 2) / 25.0 ** 2)), random_state=0)
    return base.explain_instance_with_data(data, labels, distances, label, k, feature_selection=selection)


def problem(n=400, f=30, seed=0, constant_cols=()):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 2, size=(n, f)).astype(np.uint8)
    data[0] = 1
    for c in constant_cols:
        data[:, c] = 1
    w = rng.normal(size=f)
    p = 1 / (1 + np.exp(-(data @ w * 0.4 - 1)))
    return data, np.stack([1 - p, p, np.full(n, 0.5)], axis=1)


@pytest.mark.parametrize("selection", ["auto", "none", "highest_weights", "forward_selection", "lasso_path"])
@pytest.mark.parametrize("k", [3, 10, None])
@pytest.mark.parametrize("constant_cols", [(), (2, 7)])
def test_equals_lime(selection, k, constant_cols):
    data, labels = problem(constant_cols=constant_cols)
    if selection == "forward_selection" and k is None:
        k = 8  # lime's forward selection over all 30 features is slow and adds nothing here
    ref = lime_fit(data, labels, 1, data.shape[1] if k is None else k, selection)
    fit = fit_surrogate(data, labels, 1, num_features=k, feature_selection=selection)
    assert fit.intercept == pytest.approx(ref[0], abs=1e-8)
    assert fit.score == pytest.approx(ref[2], abs=1e-8)
    assert fit.local_pred == pytest.approx(float(ref[3][0]), abs=1e-8)
    assert [i for i, _ in fit.weights] == [int(i) for i, _ in ref[1]]
    np.testing.assert_allclose([w for _, w in fit.weights], [w for _, w in ref[1]], atol=1e-8)
    for c in constant_cols:
        assert dict(fit.weights).get(c, 0.0) == pytest.approx(0.0, abs=1e-10)


def test_constant_label_and_weights_sorted():
    data, labels = problem()
    fit = fit_surrogate(data, labels, 2)  # a label that never moves
    assert all(w == pytest.approx(0, abs=1e-12) for _, w in fit.weights)
    fit = fit_surrogate(data, labels, 1)
    mags = [abs(w) for _, w in fit.weights]
    assert mags == sorted(mags, reverse=True)


def test_bad_arguments():
    data, labels = problem()
    with pytest.raises(ValueError, match="feature_selection"):
        fit_surrogate(data, labels, 1, feature_selection="best")
    with pytest.raises(ValueError, match="label"):
        fit_surrogate(data, labels, 5)
    with pytest.raises(ValueError, match="same N"):
        fit_surrogate(data[:10], labels, 1)
