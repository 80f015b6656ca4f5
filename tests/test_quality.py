"""Explanations of the trained default model find the planted evidence (issue: models)."""
import pyarrow.parquet as pq

from musiclime import MusicLIME
from musiclime.library import track_factorizations
from musiclime.models import load_checkpoint
from musiclime.quality import planted_by_track, pooled_precision, precision_at_k


def test_planted_evidence_in_top5_of_default_genre_model(demo_library, genre_model_dir):
    model = load_checkpoint(genre_model_dir)
    rows = [r for r in pq.read_table(demo_library / "catalogue.parquet").to_pylist() if r["split"] == "test"][:20]
    planted = planted_by_track(pq.read_table(demo_library / "ground_truth.parquet").to_pylist(), "genre")
    # 1000 joint rows of the crossed orthogonal design: about a tenth of the paper's encoder
    # work (docs/benchmarks.md) and a tenth of the paper design's test time (22 s, not 220 s)
    explainer = MusicLIME(num_samples=1000, design="orthogonal-grid", seed=0)
    per_track, by_abs, correct = [], [], 0
    for r in rows:
        af, lf = track_factorizations(demo_library, r, model.sample_rate)
        label = model.classes.index(r["genre"])
        exp = explainer.explain(model, af, lf, labels=[label])
        correct += exp.top_labels[0] == label
        if r["track_id"] in planted:
            per_track.append(precision_at_k(exp, label, planted[r["track_id"]], k=5))
            by_abs.append(precision_at_k(exp, label, planted[r["track_id"]], k=5, rank="abs"))
    p, p_abs = pooled_precision(per_track), pooled_precision(by_abs)
    assert correct >= 16, f"the model itself is weak: {correct}/20 correct"
    # Measured (seed 0, orthogonal-grid, its log-odds target), features ranked by support for
    # the label: overall 0.93, audio 0.96, lyrics 0.91; 18/20 correct (with the paper's 1000
    # foldover rows on the probability: overall 0.90, audio 0.96, lyrics 0.88). Ranked by
    # |weight| instead, lyrics is 0.79 (audio 0.92): the
    # model also pushes away from the label on a few filler words, strong counter-evidence
    # that is not planted evidence (both rankings are kept visible here).
    assert p["overall"] >= 0.8 and p["audio"] >= 0.8 and p["lyrics"] >= 0.8, p
    assert p_abs["audio"] >= 0.8 and p_abs["lyrics"] >= 0.75, p_abs


def test_precision_ranks_supporting_evidence_first():
    import numpy as np

    from musiclime.explanation import Explanation
    from musiclime.factorization import AudioFactorization, LyricsFactorization
    from musiclime.layout import FeatureLayout
    from musiclime.quality import Planted
    from musiclime.surrogate import SurrogateFit
    af = AudioFactorization(np.ones((4, 1000), np.float32), 1000, n_segments=2)
    fs = FeatureLayout.from_factorizations(af, LyricsFactorization("fire walk rain"))
    n_a = fs.n_audio
    # |weight| order: walk (against), fire, rain; support order: fire, rain, walk
    fit = SurrogateFit(0.0, [(n_a + 1, -0.9), (n_a, 0.5), (n_a + 2, 0.1)], 0.9, 0.5)
    exp = Explanation(["a", "b"], np.array([0.2, 0.8]), [1], [1], fs, {1: fit}, "both")
    planted = Planted(frozenset(), frozenset({"fire", "rain"}))
    assert precision_at_k(exp, 1, planted)["lyrics"] == (2, 2)
    assert precision_at_k(exp, 1, planted, rank="abs")["lyrics"] == (1, 2)
