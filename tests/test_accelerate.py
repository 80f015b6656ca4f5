"""The GPU stage's speed levers leave the results alone: ``--compile`` (real inductor on the
CPU here), demucs separating several tracks in one batched call, demucs under bf16 only
within its tolerance, pinned host-to-device copies."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.demucs_tiny import save_tiny_demucs

SR = 16000


@pytest.fixture(scope="module")
def paper_checkpoint(tmp_path_factory):
    from bench.bench_gpu_stage import build_models
    ckpt, _ = build_models(tmp_path_factory.mktemp("paper"), "tiny")
    return ckpt


@pytest.fixture(scope="module")
def demucs_repo(tmp_path_factory):
    return save_tiny_demucs(tmp_path_factory.mktemp("demucs"))


def _inputs(n: int, seconds: float, separated: bool, lengths=None):
    from bench.bench_gpu_stage import tracks
    out = tracks(n, seconds, separated)
    for inp, length in zip(out, lengths or ()):
        inp.mix = inp.mix[:length]
    return out


def test_compile_finds_the_encoders_and_the_filterbank(paper_checkpoint):
    from musiclime.accelerate import compile_model, compile_units
    from musiclime.models.registry import load_model
    model = load_model(str(paper_checkpoint), device="cpu")
    names = [n for n, _ in compile_units(model)]
    assert names == ["audio_encoder.model", "audio_encoder.fbank", "lyrics_encoder.model"] or \
        sorted(names) == sorted(["audio_encoder.model", "audio_encoder.fbank", "lyrics_encoder.model"]), names
    assert compile_model(model, "off") == []
    with pytest.raises(ValueError, match="compile must be one of"):
        compile_model(model, "fast")


def test_a_compiled_stage_explains_as_the_eager_one(paper_checkpoint):
    """Inductor (compiling C++ here) through the product's stage: the same masks, the same
    probabilities within float tolerance (audio alone: the AST and its filterbank are what
    compile here; the text encoder's compile is the same call)."""
    from musiclime.explainer import ExplainerSpec
    from musiclime.gpu_stage import ExplainStage
    spec = ExplainerSpec(num_samples=32, design="iid")
    eager = ExplainStage(str(paper_checkpoint), spec, "audio", 4, device="cpu")
    compiled = ExplainStage(str(paper_checkpoint), spec, "audio", 4, device="cpu", compile="on")
    assert compiled.info()["compiled"] == ["audio_encoder.model", "audio_encoder.fbank", "lyrics_encoder.model"]
    a, b = eager(_inputs(1, 2.0, False)[0]), compiled(_inputs(1, 2.0, False)[0])
    assert np.array_equal(a.plan.masks, b.plan.masks)
    assert np.abs(a.probs - b.probs).max() < 1e-4


def test_demucs_separates_a_batch_as_it_separates_each_track(demucs_repo):
    from musiclime.separation.demucs import DemucsSeparator
    sep = DemucsSeparator("tiny", demucs_repo, device="cpu", precision="fp32")
    rng = np.random.default_rng(0)
    mixes = [rng.normal(0, s, n).astype(np.float32) for s, n in ((0.1, SR), (0.5, SR), (0.2, SR // 2))]
    together = sep.separate_batch(mixes, SR)
    for mix, got in zip(mixes, together):
        alone = sep.separate(mix, SR)
        assert got.shape == alone.shape == (4, len(mix))
        assert torch.allclose(got, alone, atol=1e-5, rtol=1e-4)  # each normalised on its own, as alone


def test_demucs_bf16_is_used_only_within_tolerance(demucs_repo):
    from musiclime.separation.demucs import BF16_TOLERANCE, DemucsSeparator, relative_error
    fp32 = DemucsSeparator("tiny", demucs_repo, device="cpu", precision="auto")
    assert fp32.precision == "fp32" and "precision" not in fp32.cache_params()  # the keys of before
    bf16 = DemucsSeparator("tiny", demucs_repo, device="cpu", precision="bf16")
    assert bf16.precision == "bf16" and bf16.cache_params()["precision"] == "bf16"
    assert 0 < bf16.bf16_error < 0.1  # bf16 changes the stems, a little
    mix = np.random.default_rng(1).normal(0, 0.3, SR).astype(np.float32)
    err = relative_error(bf16.separate(mix, SR), fp32.separate(mix, SR))
    assert 0 < err < 0.1
    assert BF16_TOLERANCE == 1e-2
    with pytest.raises(ValueError, match="precision"):
        DemucsSeparator("tiny", demucs_repo, device="cpu", precision="fp16")


def test_the_stem_cache_separates_its_misses_in_one_call(demucs_repo, tmp_path):
    from musiclime.separation import StemCache
    from musiclime.separation.demucs import DemucsSeparator

    class Counted(DemucsSeparator):
        calls: list[int] = []

        def separate_batch(self, audios, sample_rate):
            self.calls.append(len(audios))
            return super().separate_batch(audios, sample_rate)

    sep = Counted("tiny", demucs_repo, device="cpu", precision="fp32")
    cache = StemCache(tmp_path / "stems")
    rng = np.random.default_rng(2)
    mixes = [rng.normal(0, 0.2, SR).astype(np.float32) for _ in range(3)]
    cache.separate(sep, mixes[0], SR)
    got = cache.separate_many(sep, mixes, SR)
    assert sep.calls == [1, 2] and [hit for _, hit in got] == [True, False, False]
    assert [hit for _, hit in cache.separate_many(sep, mixes, SR)] == [True] * 3 and sep.calls == [1, 2]
    assert (cache.hits, cache.misses) == (4, 3)


def test_the_stage_separates_a_call_s_tracks_together_and_explains_each(paper_checkpoint, demucs_repo, tmp_path):
    """A call carrying three mixes: one batched separation, and each track's result is the
    one it gets alone (the stems come from the cache the batch filled). Should the batched
    separation fail (a mix demucs rejects), each track is separated in its own turn."""
    from musiclime.explainer import ExplainerSpec
    from musiclime.gpu_stage import ExplainStage
    from musiclime.records import Predictions
    spec = ExplainerSpec(num_samples=32, design="iid")
    sep = ("demucs", {"model_name": "tiny", "repo": str(demucs_repo)}, str(tmp_path / "stems"))
    stage = ExplainStage(str(paper_checkpoint), spec, "both", 4, device="cpu", separator=sep)
    assert stage.info()["separation_precision"] == "fp32"  # CPU: fp32
    batch = stage.explain_batch(_inputs(3, 2.0, True))
    assert all(isinstance(r, Predictions) for r in batch)
    assert stage.cache.misses == 3 and all(r.input.timings["separate_s"] > 0 for r in batch)
    assert all(r.input.separated is None and r.input.mix is None for r in batch)  # nothing heavy leaves
    again = [stage(inp) for inp in _inputs(3, 2.0, True)]  # alone, from the cache
    assert stage.cache.hits == 3
    for a, b in zip(batch, again):
        assert np.allclose(a.probs, b.probs, atol=1e-6)
    broken = _inputs(3, 2.0, True)
    for inp in broken:
        inp.mix = inp.mix * 1.5  # not cached yet
    broken[1].mix = np.full(SR * 2, np.nan, np.float32)
    stage._separate_together(broken, [])
    assert all(inp.separated is None for inp in broken)
    assert isinstance(stage(broken[0]), Predictions) and isinstance(stage(broken[2]), Predictions)


def test_pinned_copies_give_the_same_tensor():
    from musiclime.accelerate import to_device
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    a.setflags(write=False)  # as Ray hands it over
    t = to_device(a, "cpu")
    assert t.dtype == torch.float32 and t.tolist() == a.tolist()
    t += 1  # a copy: the read-only source is untouched
    assert a[0, 0] == 0


def test_a_group_s_first_call_separates_the_tracks_ahead_into_the_cache(paper_checkpoint, demucs_repo, tmp_path):
    """What the actor does with a group (``--separation-batch``; the pool sends the group's
    other decoded tracks along with its first call): one batched separation of the call's
    track and those ahead; the later calls find their stems cached and explain as if alone.
    A track ahead that failed to decode (an error row) is skipped."""
    from musiclime.explainer import ExplainerSpec
    from musiclime.gpu_stage import ExplainStage
    from musiclime.records import ErrorRecord, Predictions
    spec = ExplainerSpec(num_samples=32, design="iid")
    sep = ("demucs", {"model_name": "tiny", "repo": str(demucs_repo)}, str(tmp_path / "stems"))
    stage = ExplainStage(str(paper_checkpoint), spec, "both", 4, device="cpu", separator=sep)
    group = _inputs(4, 2.0, True)
    bad = ErrorRecord("bad", 9, "decode", "decode_error", "unreadable")
    first = stage.explain_batch(group[:1], ahead=group[1:] + [bad])
    assert isinstance(first[0], Predictions) and stage.info()["separated_ahead"] == 3
    assert (stage.cache.hits, stage.cache.misses) == (0, 4)
    later = [stage.explain_batch([inp])[0] for inp in _inputs(4, 2.0, True)[1:]]
    assert (stage.cache.hits, stage.cache.misses) == (3, 4)  # each later call: its stems from the cache
    alone = ExplainStage(str(paper_checkpoint), spec, "both", 4, device="cpu",
                         separator=(*sep[:2], str(tmp_path / "alone")))
    for got, inp in zip(later, _inputs(4, 2.0, True)[1:]):
        assert np.allclose(got.probs, alone(inp).probs, atol=1e-5)


def test_the_separation_batch_defaults_to_8_only_where_demucs_runs_on_gpus():
    from pipeline.config import ExplainConfig
    cfg = dict(catalogue="c.parquet", model="default", out="o")
    assert ExplainConfig(**cfg, separator="demucs", gpus_per_predictor=1).tracks_per_separation == 8
    assert ExplainConfig(**cfg, separator="demucs", gpus_per_predictor=1).in_flight(2) == 34
    assert ExplainConfig(**cfg, separator="demucs").tracks_per_separation == 1
    assert ExplainConfig(**cfg, separator="hpss", gpus_per_predictor=1).tracks_per_separation == 1
    assert ExplainConfig(**cfg, separator="hpss").in_flight(2) == 6  # as before groups
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="separation_batch"):
            ExplainConfig(**cfg, separation_batch=bad)


def test_the_report_finds_stems_a_gpu_stage_separated_under_bf16(demucs_repo, tmp_path):
    """bf16 entries carry their own cache keys; the report (a CPU, fp32) still finds them."""
    from musiclime.separation import StemCache
    from musiclime.separation.demucs import DemucsSeparator
    from pipeline.config import ExplainConfig
    from pipeline.listen import cached_demucs_stems as _cached_demucs_stems
    mix = np.random.default_rng(3).normal(0, 0.2, SR).astype(np.float32)
    cfg = ExplainConfig(catalogue="c.parquet", model="default", out="o", separator="demucs", demucs_model="tiny",
                        demucs_repo=str(demucs_repo), stem_cache=str(tmp_path / "stems"))
    assert _cached_demucs_stems(cfg, mix, SR) is None
    bf16 = DemucsSeparator("tiny", demucs_repo, device="cpu", precision="bf16")
    stems, hit = StemCache(cfg.stem_cache).separate(bf16, mix, SR)
    assert not hit
    found = _cached_demucs_stems(cfg, mix, SR)
    assert found is not None and np.allclose(found, stems.numpy())
