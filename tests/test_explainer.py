import numpy as np
import pyarrow as pa
import pytest
import torch

from musiclime import AudioFactorization, InputError, LyricsFactorization, MusicLIME
from musiclime.explainer import auto_batch_size
from tests.toys import LYRICS, SR, LateFusionPlanted, MaskLyricsPlanted, PlantedModel, planted_stems


def facts(text=LYRICS, stems=None):
    return AudioFactorization(planted_stems() if stems is None else stems, SR), LyricsFactorization(text)


def test_planted_truth_on_top_with_clear_margin():
    af, lf = facts()
    exp = MusicLIME(num_samples=1000, seed=0).explain(PlantedModel(), af, lf, top_labels=2)
    assert exp.top_labels == [1, 0] and exp.labels == [1, 0]
    top = exp.as_list(1)
    assert {(m, f) for m, f, _ in top[:2]} == {("audio", "drums@3"), ("lyrics", "fire")}
    assert min(w for *_, w in top[:2]) > 4 * abs(top[2][2])
    # the other label is the mirror image
    assert {(m, f) for m, f, _ in exp.as_list(0)[:2]} == {("audio", "drums@3"), ("lyrics", "fire")}
    assert all(w < 0 for *_, w in exp.as_list(0)[:2])
    assert exp.score[1] > 0.8
    # the surrogate fits auto's target, the log-odds: its prediction for the whole input is one
    p = exp.probabilities[1]
    assert exp.target == "log_odds" and exp.local_pred[1] == pytest.approx(np.log(p / (1 - p)), abs=0.5)


def test_deterministic_and_seed_matters():
    af, lf = facts()
    def run(seed):
        return MusicLIME(num_samples=300, seed=seed).explain(PlantedModel(), af, lf, labels=[1]).as_list(1)
    assert run(5) == run(5)
    assert run(5) != run(6)


def test_batch_size_does_not_change_weights():
    af, lf = facts()
    a = MusicLIME(num_samples=300, batch_size=1).explain(PlantedModel(), af, lf, labels=[1])
    b = MusicLIME(num_samples=300, batch_size=300).explain(PlantedModel(), af, lf, labels=[1])
    np.testing.assert_allclose([w for *_, w in a.as_list(1)], [w for *_, w in b.as_list(1)], atol=1e-9)


def test_auto_batch_size_per_device():
    assert auto_batch_size("cpu") <= 16 < auto_batch_size("cuda")
    model = PlantedModel()
    af, lf = facts()
    MusicLIME(num_samples=200).explain(model, af, lf, labels=[1])
    assert model.max_batch == auto_batch_size("cpu")


def test_duplicate_masks_evaluated_once():
    af, lf = facts(text="fire")
    af = AudioFactorization(planted_stems()[:1], SR, n_segments=2, stem_names=["mix"])
    model = PlantedModel()
    exp = MusicLIME(num_samples=500).explain(model, af, lf, labels=[1])
    assert model.rows == exp.model_rows <= 8  # 3 binary features: at most 8 distinct masks


def test_late_fusion_counts_and_equal_weights():
    af, lf = facts()
    lfm = LateFusionPlanted()
    exp = MusicLIME(num_samples=400, seed=1).explain(lfm, af, lf, labels=[1], modality="audio")
    assert lfm.lyric_rows == 1 and lfm.audio_rows <= 400
    plain = MusicLIME(num_samples=400, seed=1).explain(PlantedModel(), af, lf, labels=[1], modality="audio")
    np.testing.assert_allclose([w for *_, w in exp.as_list(1)], [w for *_, w in plain.as_list(1)], atol=1e-9)
    lfm = LateFusionPlanted()
    MusicLIME(num_samples=400, seed=1).explain(lfm, af, lf, labels=[1], modality="lyrics")
    assert lfm.audio_rows == 1


def test_mask_lyrics_path_preferred_and_equal():
    af, lf = facts()
    model = MaskLyricsPlanted()
    exp = MusicLIME(num_samples=300, seed=2).explain(model, af, lf, labels=[1])
    assert model.lyric_rows == 0 and 0 < model.mask_rows <= 300
    ref = MusicLIME(num_samples=300, seed=2).explain(PlantedModel(), af, lf, labels=[1])
    np.testing.assert_allclose([w for *_, w in exp.as_list(1)], [w for *_, w in ref.as_list(1)], atol=1e-9)


def test_unimodal_lists_only_that_modality():
    af, lf = facts()
    for modality in ("audio", "lyrics"):
        exp = MusicLIME(num_samples=300).explain(PlantedModel(), af, lf, labels=[1], modality=modality)
        assert {m for m, *_ in exp.as_list(1)} == {modality}
        assert exp.modality_share(1)[modality] == pytest.approx(1.0)


def test_no_lyrics_explains_audio_and_flags_it():
    af, lf = facts(text=" ... ")
    exp = MusicLIME(num_samples=200).explain(PlantedModel(), af, lf, labels=[1])
    assert exp.flags == ("no_lyrics",) and exp.modality == "audio"
    assert exp.as_list(1)[0][1] == "drums@3"
    with pytest.raises(InputError, match="no_lyrics"):
        MusicLIME(num_samples=200).explain(PlantedModel(), af, lf, modality="lyrics")


def test_silent_stem_is_fine():
    stems = planted_stems()
    stems[0] = 0  # no vocals
    af, lf = facts(stems=stems)
    exp = MusicLIME(num_samples=300).explain(PlantedModel(), af, lf, labels=[1])
    assert exp.as_list(1)[0][1] in ("drums@3", "fire")
    vocals = [w for m, f, w in exp.as_list(1) if f.startswith("vocals@")]
    assert max(abs(w) for w in vocals) < 0.1 * abs(exp.as_list(1)[0][2])  # chance-level only


class WrongShape(PlantedModel):
    def predict_proba(self, audio, lyrics):
        return np.ones((len(lyrics), 3)) / 3


class NaNs(PlantedModel):
    def predict_proba(self, audio, lyrics):
        return np.full((len(lyrics), 2), np.nan)


@pytest.mark.parametrize("model,match", [(WrongShape(), "shape"), (NaNs(), "NaN")])
def test_bad_model_output(model, match):
    af, lf = facts()
    with pytest.raises(InputError, match=match) as e:
        MusicLIME(num_samples=50).explain(model, af, lf, labels=[1])
    assert e.value.code == "bad_model_output"


def test_sample_rate_and_protocol_errors():
    af = AudioFactorization(planted_stems(), 16000)
    with pytest.raises(ValueError, match="sample-rate mismatch"):
        MusicLIME(num_samples=50).explain(PlantedModel(), af, LyricsFactorization(LYRICS))
    with pytest.raises(TypeError, match="predict_proba"):
        MusicLIME(num_samples=50).explain(object(), *facts())
    with pytest.raises(ValueError, match="out of range"):
        MusicLIME(num_samples=50).explain(PlantedModel(), *facts(), labels=[2])
    with pytest.raises(ValueError):
        MusicLIME(num_samples=1)
    with pytest.raises(ValueError):
        MusicLIME(batch_size=0)


def test_cuda_out_of_memory_halves_the_batch():
    class SmallDevice(PlantedModel):
        def predict_proba(self, audio, lyrics):
            if len(lyrics) > 16:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (test device holds 16 rows)")
            return super().predict_proba(audio, lyrics)
    af, lf = facts()
    model = SmallDevice()
    exp = MusicLIME(num_samples=300, batch_size=100, seed=3).explain(model, af, lf, labels=[1])
    ref = MusicLIME(num_samples=300, seed=3).explain(PlantedModel(), af, lf, labels=[1])
    assert model.max_batch <= 16
    assert exp.as_list(1) == ref.as_list(1)


def test_arrow_table_and_text():
    af, lf = facts()
    exp = MusicLIME(num_samples=300).explain(PlantedModel(), af, lf, top_labels=2)
    t = exp.to_arrow()
    assert isinstance(t, pa.Table) and t.num_rows == 2 * (40 + lf.n_features)
    rows = t.filter(pa.compute.equal(t["label"], "fierce")).to_pylist()
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    drums3 = next(r for r in rows if r["feature"] == "drums@3")
    assert (drums3["stem"], drums3["segment"], drums3["start_s"], drums3["end_s"], drums3["token"]) == \
        ("drums", 3, 3.0, 4.0, None)
    fire = next(r for r in rows if r["feature"] == "fire")
    assert fire["modality"] == "lyrics" and fire["token"] == "fire" and fire["token_index"] == 1
    assert exp.stem_segment_matrix(1)[1, 3] == pytest.approx(drums3["weight"])
    text = str(exp)
    assert "fierce" in text and "drums@3" in text and "R^2" in text


def test_feature_selection_limits_features():
    af, lf = facts()
    exp = MusicLIME(num_samples=300, num_features=2).explain(PlantedModel(), af, lf, labels=[1])
    assert {f for _, f, _ in exp.as_list(1)} == {"drums@3", "fire"}


def test_grid_design_runs_encoders_once_per_half_mask_and_finds_the_truth():
    af, lf = facts()
    model = LateFusionPlanted()
    exp = MusicLIME(num_samples=1000, design="grid", grid_size=(60, 40), seed=0).explain(model, af, lf, labels=[1])
    assert exp.num_samples == 1000
    assert model.audio_rows <= 60 and model.lyric_rows <= 40 and exp.model_rows == model.audio_rows + model.lyric_rows
    assert {f for _, f, _ in exp.as_list(1)[:2]} == {"drums@3", "fire"}
    again = MusicLIME(num_samples=1000, design="grid", grid_size=(60, 40), seed=0).explain(LateFusionPlanted(), af, lf, labels=[1])
    assert again.as_list(1) == exp.as_list(1)
    with pytest.raises(ValueError, match="design"):
        MusicLIME(design="sobol")


def test_auto_num_samples_stops_when_resolved_and_reuses_outputs():
    af, lf = facts()
    model = PlantedModel()
    exp = MusicLIME(num_samples="auto", design="iid", top_k=2, seed=0).explain(model, af, lf, labels=[1])
    # a clear two-feature truth is resolved long before the cap, and each round only pays
    # for its new masks: the model saw each distinct mask once
    assert exp.topk == "resolved" and exp.num_samples < 8000 and exp.separation >= 1.645
    assert [r[0] for r in exp.rounds] == [250, 500, 1000, 2000, 4000, 8000][:len(exp.rounds)]
    assert model.rows == exp.model_rows == exp.rounds[-1][1] <= exp.num_samples
    assert {f for _, f, _ in exp.as_list(1)[:2]} == {"drums@3", "fire"}
    fixed = MusicLIME(num_samples=exp.num_samples, design="iid", top_k=2, seed=0).explain(
        PlantedModel(), af, lf, labels=[1])
    np.testing.assert_allclose([w for *_, w in exp.as_list(1)], [w for *_, w in fixed.as_list(1)], atol=1e-9)
    # beyond the two planted features the toy's weights are noise: a top-10 does not separate
    # from the 11th with 99.9% confidence, and sampling runs to the cap
    capped = MusicLIME(num_samples="auto", design="iid", top_k=10, tie_tolerance=0, confidence=0.999,
                       max_samples=600, seed=0).explain(PlantedModel(), af, lf, labels=[1])
    assert [r[0] for r in capped.rounds] == [250, 500, 600] and capped.num_samples == 600
    assert capped.topk == "unresolved"
    with pytest.raises(ValueError, match="num_samples"):
        MusicLIME(num_samples="many")


def test_auto_grid_grows_the_grid_and_reuses_embeddings():
    af, lf = facts()
    model = LateFusionPlanted()
    exp = MusicLIME(num_samples="auto", design="grid", top_k=2, seed=0).explain(model, af, lf, labels=[1])
    sides = [r[1] for r in exp.rounds]
    assert exp.topk == "resolved" and {f for _, f, _ in exp.as_list(1)[:2]} == {"drums@3", "fire"}
    # every half-mask is embedded once across all rounds
    assert model.audio_rows + model.lyric_rows == exp.model_rows == sides[-1]


def test_design_auto_picks_orthogonal_designs_only_for_adaptive_sampling():
    assert MusicLIME(num_samples="auto").design_for(LateFusionPlanted()) == "orthogonal-grid"
    assert MusicLIME(num_samples="auto").design_for(PlantedModel()) == "orthogonal"
    assert MusicLIME(num_samples=1000).design_for(LateFusionPlanted()) == "foldover"
    assert MusicLIME(num_samples=1000, design="iid").plan(*facts()).design == "iid"
    assert MusicLIME(num_samples=1000, design="grid").design_for(PlantedModel()) == "grid"
    af, lf = facts()
    exp = MusicLIME(num_samples="auto", top_k=2, seed=0).explain(LateFusionPlanted(), af, lf, labels=[1])
    assert exp.model_rows * 4 <= exp.num_samples  # crossed half-masks: few encoder passes per sample


def test_foldover_design_finds_the_truth():
    af, lf = facts()
    ex = MusicLIME(num_samples=400, design="foldover", top_k=2, seed=0)
    exp = ex.explain(PlantedModel(), af, lf, labels=[1])
    assert {f for _, f, _ in exp.as_list(1)[:2]} == {"drums@3", "fire"}
    plan = ex.plan(af, lf)
    assert plan.design == "foldover" and not plan.masks[1].any()
    auto = MusicLIME(num_samples="auto", design="foldover", top_k=2, seed=0).explain(PlantedModel(), af, lf, labels=[1])
    assert auto.topk == "resolved"