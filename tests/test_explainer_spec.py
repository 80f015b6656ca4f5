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
