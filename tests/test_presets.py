"""``--quality`` presets: what each resolves to per model type (as bench/results/presets.json
measured it), the bounded crossed design the steady preset uses, the options that override
a preset, and a standing output that keeps its sampling when the default preset changes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from musiclime import MusicLIME, designs, presets
from musiclime.masks import Modality
from pipeline import output
from pipeline.config import ExplainConfig
from tests.test_explainer import facts
from tests.toys import LateFusionPlanted, PlantedModel

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "presets.json"


class _Count:
    """Encoder rows a late-fusion toy runs (its methods wrapped)."""

    def __init__(self, model):
        self.model, self.audio_rows, self.text_rows = model, 0, 0
        self.classes, self.sample_rate = model.classes, model.sample_rate

    def embed_audio(self, audio):
        self.audio_rows += len(audio)
        return self.model.embed_audio(audio)

    def embed_lyrics(self, lyrics):
        self.text_rows += len(lyrics)
        return self.model.embed_lyrics(lyrics)

    def head(self, a, b):
        return self.model.head(a, b)

    def predict_proba(self, audio, lyrics):
        return self.model.predict_proba(audio, lyrics)


@pytest.mark.parametrize("quality", list(presets.PRESETS))
def test_each_preset_resolves_to_its_design_work_and_target(quality):
    af, lf = facts()
    preset = presets.get(quality)
    for late, model in ((True, _Count(LateFusionPlanted())), (False, PlantedModel())):
        exp = MusicLIME(quality=quality, seed=0).explain(model, af, lf, labels=[1])
        setting = preset.setting(late)
        assert exp.design == setting.design and exp.target == setting.target
        if setting.num_samples:  # the paper's: a fixed count of joint rows
            assert exp.num_samples == setting.num_samples
            continue
        shape = designs.MaskShape(af.n_features, lf.n_features, Modality.BOTH)
        want = setting.work(late and shape.crossed)
        d = designs.get(setting.design)
        size = d.for_work(want, shape, late)
        planned = d.work(size, shape, late)
        # sized to the work: within one mask pair of each side, never above (one block at least)
        assert want - 4 <= planned <= max(want, d.work(d.at(shape, 1), shape, late))
        assert exp.num_samples == size.num_samples
        got = model.audio_rows + model.text_rows if late else exp.model_rows
        assert got <= planned  # repeated half-masks are evaluated once
    # options given with a preset override it, the rest stays the preset's
    exp = MusicLIME(quality=quality, num_samples=64, design="foldover", seed=0).explain(PlantedModel(), af, lf, labels=[1])
    assert (exp.num_samples, exp.design, exp.target) == (64, "foldover", preset.target)


def test_presets_are_what_the_benchmark_measured():
    """The table's designs and work (bench/results/presets.json) are what the presets resolve
    to now: a preset changed without rerunning the benchmark fails here."""
    if not RESULTS.is_file():
        pytest.fail("bench/results/presets.json is missing: run python bench/bench_presets.py")
    doc = json.loads(RESULTS.read_text())
    for task, views in doc["tasks"].items():
        for view in ("late_fusion", "predict_proba"):
            v, late = views[view], view == "late_fusion"
            for quality, s in v["summary"].items():
                setting = presets.get(quality).setting(late)
                assert (s["design"], s["target"]) == (setting.design, setting.target), (task, view, quality)
                work = s["audio_rows"] + s["text_rows"] if late else s["model_rows"]
                want = setting.work(late) if setting.num_samples is None else setting.num_samples * (2 if late else 1)
                assert abs(work - want) <= 0.05 * want, (task, view, quality, work, want)


def test_orthogonal_cross_is_bounded_and_keeps_audio_orthogonal_to_lyrics():
    d = designs.get("orthogonal-cross")
    for n_audio, n_lyrics in ((40, 60), (40, 7), (12, 900)):
        shape = designs.MaskShape(n_audio, n_lyrics, Modality.BOTH)
        size = d.for_work(2000, shape, late_fusion=True)
        assert sum(size.grid) <= 2000 and d.work(size, shape, True) == sum(size.grid)
        masks = d.sample(shape, size, seed=3)
        assert masks.shape == (size.num_samples, n_audio + n_lyrics) and masks[0].all()
        assert size.num_samples * (n_audio + n_lyrics) <= designs.MAX_CROSS_CELLS
        c = masks.astype(float) - 0.5
        assert np.abs(c[:, :n_audio].T @ c[:, n_audio:]).max() == 0  # exactly orthogonal across modalities
        assert np.abs(c.mean(0)).max() < 0.02                          # every column balanced
        # the encoders see exactly the sides' half-masks
        assert len(np.unique(masks[:, :n_audio], axis=0)) <= size.grid[0]
        assert len(np.unique(masks[:, n_audio:], axis=0)) <= size.grid[1]
        units = d.clusters(masks, shape, size)
        assert [len(np.unique(u)) for u in units] == [size.grid[0] // 2, size.grid[1] // 2]
        np.testing.assert_array_equal(masks, d.sample(shape, size, seed=3))
    # at small budgets every block is crossed in full (the cap does not bind)
    shape = designs.MaskShape(40, 60, Modality.BOTH)
    one = d.at(shape, 1)
    assert one.num_samples == 4 + 88 * 128 and one.grid == (90, 130)  # orders 44 and 64


def test_steady_is_steadier_than_the_paper_on_a_planted_late_fusion_model():
    """The planted features are found by both; steady's top-5 varies less across seeds."""
    af, lf = facts()
    tops = {q: [frozenset(f for _, f, _ in MusicLIME(quality=q, seed=s).explain(LateFusionPlanted(), af, lf,
                                                                                   labels=[1]).as_list(1)[:5])
                for s in range(3)] for q in ("paper", "steady")}
    for q, sets in tops.items():
        assert all({"drums@3", "fire"} <= t for t in sets), q
    spread = {q: len(set(sets)) for q, sets in tops.items()}
    assert spread["steady"] <= spread["paper"]


def test_config_quality_options_and_hashes():
    legacy = ExplainConfig(catalogue="c", out="o")
    assert (legacy.quality, legacy.num_samples, legacy.design, legacy.target) == (presets.DEFAULT_QUALITY, 1000,
                                                                                  "auto", "auto")
    steady = ExplainConfig(catalogue="c", out="o", quality="steady")
    assert steady.settings()["quality"] == "steady" and steady.settings()["num_samples"] == "preset"
    assert steady.config_hash("m") != legacy.config_hash("m")
    assert "quality" not in legacy.settings()  # outputs made before presets keep their hash
    # without --quality, a sampling option means what it meant before presets
    expert = ExplainConfig(catalogue="c", out="o", num_samples=500)
    assert (expert.quality, expert.design, expert.default_sampling) == (None, "auto", False)
    with pytest.raises(ValueError, match="quality must be one of"):
        ExplainConfig(catalogue="c", out="o", quality="best")
    from pipeline.cli import build_parser
    args = build_parser().parse_args(["explain", "c", "--out", "o", "--quality", "fast"])
    assert args.quality == "fast"


def test_keep_sampling_takes_the_standing_outputs(monkeypatch):
    before = ExplainConfig(catalogue="c", out="o")
    monkeypatch.setattr(presets, "DEFAULT_QUALITY", "steady")
    night = ExplainConfig(catalogue="c", out="o", incremental=True)
    assert night.quality == "steady" and night.default_sampling
    kept = night.keep_sampling(before.settings())
    assert kept.config_hash("m") == before.config_hash("m") and kept.quality is None
    # an output made with a preset keeps it; a run that names its sampling is not changed
    fast = ExplainConfig(catalogue="c", out="o", quality="fast")
    assert night.keep_sampling(fast.settings()).config_hash("m") == fast.config_hash("m")
    told = ExplainConfig(catalogue="c", out="o", quality="paper", incremental=True)
    assert told.keep_sampling(before.settings()) is told


def test_a_new_default_preset_does_not_reexplain_a_standing_output(tmp_path, plugin_path, ray_session, monkeypatch):
    """Night 1 before the upgrade (no preset); night 2 after it (default: steady): nothing is
    explained again, and the new track gets night 1's sampling; a new output gets steady."""
    from pipeline.driver import run_explain
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        sf.write(tmp_path / f"t{i}.wav", rng.normal(0, 0.1, 32000).astype(np.float32), 16000)
        rows.append(dict(track_id=f"t{i}", audio_path=f"t{i}.wav", lyrics="night river lamp stone"))
    cat = tmp_path / "catalogue.parquet"
    pq.write_table(pa.Table.from_pylist(rows[:3]), cat)
    out = str(tmp_path / "out")

    def night(run_id, where=out):
        s = run_explain(ExplainConfig(catalogue=str(cat), model="mlplugins:make", out=where, separator="none",
                                      segments=2, run_id=run_id, incremental=True), show_progress=False)
        assert s.exit_code == 0, s.message
        return s

    n1 = night("n1")
    assert n1.explained == 3
    monkeypatch.setattr(presets, "DEFAULT_QUALITY", "steady")
    pq.write_table(pa.Table.from_pylist(rows), cat)
    n2 = night("n2")
    assert (n2.unchanged, n2.computed) == (3, 1)
    docs = {d["run_id"]: d for d in output.runs(out)}
    assert docs["n2"]["config_hash"] == docs["n1"]["config_hash"]
    assert "quality" not in docs["n2"]["settings"]
    fresh = night("f1", str(tmp_path / "fresh"))
    assert fresh.explained == 4
    doc = output.runs(str(tmp_path / "fresh"))[-1]
    assert doc["settings"]["quality"] == "steady"
    designs_used = set(output.frame(str(tmp_path / "fresh"), "tracks", ["design"], ["f1"])["design"].to_list())
    assert designs_used <= {"orthogonal-cross", "orthogonal"}
