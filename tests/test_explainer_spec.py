"""One explainer for both stages: with --num-samples auto the predict stage stops on the
surrogate the fit stage writes (feature selection, num_features, kernel width included)."""
from __future__ import annotations

import numpy as np
import pytest

from musiclime.gpu_stage import ExplainStage
from musiclime.stages import decode, fit
from pipeline.catalogue import read_catalogue
from pipeline.config import ExplainConfig


def test_predict_and_fit_build_the_same_explainer(plugin_path, demo_library):
    cfg = ExplainConfig(catalogue=str(demo_library / "catalogue.parquet"), model="mlplugins:make", out="o",
                        separator="provided", num_samples="auto", design="foldover",
                        feature_selection="highest_weights", num_features=6, kernel_width=0.5)
    actor = ExplainStage(cfg.model, cfg.explainer_spec(), cfg.modality, cfg.segments, "cpu")
    inp = decode(read_catalogue(demo_library / "catalogue.parquet", limit=1)[0], cfg.decode_spec(), 16000)
    pred = actor(inp)
    built = actor.spec.build(inp.seed)
    assert actor.spec == cfg.explainer_spec()
    assert (built.kernel_width, built.num_features, built.feature_selection.value) == (0.5, 6, "highest_weights")
    # the stopping rule's score is the one of the configured surrogate, recomputed here
    again = cfg.explainer_spec().build(inp.seed)
    from musiclime.factorization import AudioFactorization, LyricsFactorization
    stems = decode(read_catalogue(demo_library / "catalogue.parquet", limit=1)[0], cfg.decode_spec(), 16000).stems
    from musiclime.adaptive import sample_until_resolved
    res = sample_until_resolved(again, actor.model, AudioFactorization(stems, 16000, cfg.segments),
                                LyricsFactorization(inp.lyrics), lambda p0: [int(np.argmax(p0))], top_labels=None)
    assert pred.model_rows == res.explanation.model_rows
    written = fit(pred, cfg.fit_spec(pred.model_id), "inv")
    assert written.track["topk_resolved"] == res.explanation.topk_resolved
    assert written.track["topk_separation"] == pytest.approx(res.explanation.separation)
    weights = written.explanations.column("weight").to_numpy()
    assert np.count_nonzero(weights) <= 6  # the written surrogate keeps num_features


def test_a_gpu_stage_call_may_carry_several_tracks(plugin_path, demo_library):
    """The stage contract is per track inside a batch: each track's result is its own (a bad
    one its own error row), equal to the track explained alone."""
    from musiclime.records import ErrorRecord
    cfg = ExplainConfig(catalogue=str(demo_library / "catalogue.parquet"), model="mlplugins:make", out="o",
                        separator="provided", num_samples=64)
    stage = ExplainStage(cfg.model, cfg.explainer_spec(), cfg.modality, cfg.segments, "cpu")
    rows = read_catalogue(demo_library / "catalogue.parquet", limit=2)
    bad = ErrorRecord("x", 9, "decode", "decode_error", "unreadable")
    inputs = [decode(rows[0], cfg.decode_spec(), 16000), bad, decode(rows[1], cfg.decode_spec(), 16000)]
    alone = [stage(decode(r, cfg.decode_spec(), 16000)) for r in rows]
    batch = stage.explain_batch(inputs)
    assert batch[1] is bad and [p.input.track_id for p in (batch[0], batch[2])] == [r["track_id"] for r in rows]
    for a, b in zip(alone, (batch[0], batch[2])):
        np.testing.assert_array_equal(a.probs, b.probs)
        assert a.model_rows == b.model_rows
