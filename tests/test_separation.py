import numpy as np
import pytest
import soundfile as sf
import torch

from musiclime import AudioFactorization, InputError, LyricsFactorization, MusicLIME
from musiclime.library import synthesize, track_specs
from musiclime.separation import HPSSSeparator, StemCache, get_separator, quantize, read_provided_stems
from musiclime.separation.demucs import DemucsSeparator, UnsafeWeightsError
from tests.demucs_tiny import save_tiny_demucs, save_tiny_demucs_pickle

SR = 16000


@pytest.fixture(scope="module")
def track():
    return synthesize(track_specs(4, 0)[1], SR, 4.0)  # true stems [4, T]


def test_hpss_stems_sum_back_to_the_mix(track):
    mix = track.sum(0)
    stems = HPSSSeparator().separate(mix, SR)
    assert stems.shape == (4, len(mix)) and stems.dtype == torch.float32
    # bound: the STFT round trip; measured ~5e-7 at peak 1.0
    assert float((stems.sum(0).numpy() - mix).__abs__().max()) < 1e-5 * max(1.0, float(np.abs(mix).max()))
    # stereo input is downmixed, not rejected
    st = HPSSSeparator().separate(np.stack([mix, mix]), SR)
    torch.testing.assert_close(st, stems)


@pytest.mark.parametrize("i", [1, 2, 3])
def test_hpss_estimates_follow_their_stems(i):
    """Pure DSP leaks (see bench/bench_separation.py for SDRs): the bass estimate matches
    the true bass best of all stems, and the drums estimate follows the true drums."""
    track = synthesize(track_specs(4, 0)[i], SR, 4.0)
    est = HPSSSeparator().separate(track.sum(0), SR).numpy()
    corr = np.array([[np.dot(e, t) / (np.linalg.norm(e) * np.linalg.norm(t) + 1e-12) for t in track] for e in est])
    assert corr[2].argmax() == 2
    assert corr[1, 1] > 0.3


class CountingSeparator(HPSSSeparator):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def separate(self, audio, sample_rate):
        self.calls += 1
        return super().separate(audio, sample_rate)


def test_cache_second_run_never_separates(tmp_path, track):
    sep, cache = CountingSeparator(), StemCache(tmp_path)
    mixes = [track.sum(0), track.sum(0) * 0.5, track[:2].sum(0)]
    first = [cache.separate(sep, m, SR) for m in mixes]
    assert sep.calls == 3 and not any(hit for _, hit in first)
    again = StemCache(tmp_path)  # a new process would see the same files
    second = [again.separate(sep, m, SR) for m in mixes]
    assert sep.calls == 3 and all(hit for _, hit in second)
    for (a, _), (b, _) in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # fresh == cached, bit for bit
    # other parameters are another key
    other = CountingSeparator()
    other.n_fft = 2048
    cache.separate(other, mixes[0], SR)
    assert other.calls == 1


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "zero4k"])
def test_corrupt_cache_entry_is_recomputed(tmp_path, track, damage):
    sep, cache = CountingSeparator(), StemCache(tmp_path)
    mix = track.sum(0)
    good, _ = cache.separate(sep, mix, SR)
    path = cache.path(cache.key(torch.from_numpy(mix), SR, sep))
    data = path.read_bytes()
    mid = len(data) // 2
    path.write_bytes({"truncate": data[:mid], "garbage": b"\x00" * len(data), "empty": b"",
                      # a zeroed page in the payload: the file still parses, the checksum catches it
                      "zero4k": data[:mid - 2048] + b"\x00" * 4096 + data[mid + 2048:]}[damage])
    stems, hit = cache.separate(sep, mix, SR)
    assert not hit and sep.calls == 2 and cache.recomputed == 1
    torch.testing.assert_close(stems, good)
    assert cache.separate(sep, mix, SR)[1]  # repaired


def test_cache_writes_are_atomic_under_concurrency(tmp_path, track):
    from concurrent.futures import ThreadPoolExecutor
    sep, mix = HPSSSeparator(), track.sum(0)
    stems = quantize(sep.separate(mix, SR))
    cache = StemCache(tmp_path)
    key = cache.key(torch.from_numpy(mix), SR, sep)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: cache.store(key, stems, sep.stem_names, SR), range(32)))
    assert list(tmp_path.rglob("*.tmp")) == []
    torch.testing.assert_close(cache.load(key, len(mix), sep.stem_names), stems)


def _write_stems(tmp_path, stems, sr=SR, lengths=None):
    paths = {}
    for i, name in enumerate(("vocals", "drums", "bass", "other")):
        x = stems[i] if lengths is None else stems[i][:lengths[i]]
        p = tmp_path / f"{name}.wav"
        sf.write(p, x, sr if isinstance(sr, int) else sr[i], subtype="FLOAT")
        paths[name] = str(p)
    return paths


def test_provided_stems_read_and_checked(tmp_path, track):
    stems, flags, _ = read_provided_stems(_write_stems(tmp_path, track), SR)
    np.testing.assert_allclose(stems.numpy(), track, atol=1e-6)
    assert flags == []
    with pytest.raises(InputError, match="different lengths") as e:
        read_provided_stems(_write_stems(tmp_path, track, lengths=[64000, 64000, 60000, 64000]), SR)
    assert e.value.code == "stem_mismatch"
    with pytest.raises(InputError, match="different sample rates"):
        read_provided_stems(_write_stems(tmp_path, track, sr=[SR, SR, 8000, SR]), SR)
    paths = _write_stems(tmp_path, track)
    paths["bass"] = str(tmp_path / "nope.wav")
    with pytest.raises(InputError, match="stem 'bass'") as e:
        read_provided_stems(paths, SR)
    assert e.value.code == "missing_file"


@pytest.fixture(scope="module")
def demucs_repo(tmp_path_factory):
    return save_tiny_demucs(tmp_path_factory.mktemp("demucs"))


def test_demucs_separation_factorization_explanation(demucs_repo, track):
    sep = get_separator("demucs", model_name="tiny", repo=demucs_repo, device="cpu")
    assert sep.sample_rate == 44100
    mix = track.sum(0)[: SR * 2]
    stems = sep.separate(np.stack([mix, mix]), SR)       # stereo 16 kHz in, mono 16 kHz out
    assert stems.shape == (4, len(mix)) and torch.isfinite(stems).all()
    cache = StemCache(demucs_repo / "cache")
    stems, hit = cache.separate(sep, mix, SR)
    assert not hit and cache.separate(sep, mix, SR)[1]

    class Loudness:
        classes, sample_rate = ["quiet", "loud"], SR

        def predict_proba(self, audio, lyrics):
            e = audio.pow(2).mean(1).clamp(max=1) * 1e3
            return torch.stack([1 - e.clamp(max=1), e.clamp(max=1)], 1)
    af = AudioFactorization(stems, SR, n_segments=4)
    exp = MusicLIME(num_samples=64, seed=0).explain(Loudness(), af, LyricsFactorization("la"), labels=[1])
    assert len(exp.as_list(1)) == 16 + 1


def test_demucs_long_audio_is_chunked(demucs_repo):
    sep = DemucsSeparator("tiny", demucs_repo, device="cpu", segment_s=1.0)
    x = np.random.default_rng(0).normal(0, 0.1, SR * 3).astype(np.float32)
    assert sep.separate(x, SR).shape == (4, SR * 3)


def test_demucs_refuses_pickles_and_foreign_classes(tmp_path):
    save_tiny_demucs_pickle(tmp_path)
    with pytest.raises(UnsafeWeightsError, match="pickle"):
        DemucsSeparator("tinypkl", tmp_path, device="cpu")
    assert DemucsSeparator("tinypkl", tmp_path, device="cpu", allow_pickle=True).sample_rate == 44100
    bad = save_tiny_demucs(tmp_path / "bad", name="evil", klass="os.system")
    with pytest.raises(UnsafeWeightsError, match="not a demucs model class"):
        DemucsSeparator("evil", bad, device="cpu")
    # a callable inside demucs is no model class either, and --trust-pickle does not widen the list
    for i, klass in enumerate(("demucs.states.load_model", "demucs.pretrained.get_model", "demucs.htdemucs.HTDemucsX")):
        loader = save_tiny_demucs(tmp_path / f"loader{i}", name="loader", klass=klass)
        with pytest.raises(UnsafeWeightsError, match="not a demucs model class"):
            DemucsSeparator("loader", loader, device="cpu", allow_pickle=True)
    with pytest.raises(FileNotFoundError, match="--demucs-repo"):
        DemucsSeparator("htdemucs", None, device="cpu")


def test_unknown_separator():
    with pytest.raises(ValueError, match="separator must be one of"):
        get_separator("spleeter")


def test_demucs_cache_key_does_not_depend_on_the_thread_count(demucs_repo):
    """Ray workers run with one thread, the report and the CLI with more: one key for all."""
    import json
    before = torch.get_num_threads()
    keys = set()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            keys.add(json.dumps(DemucsSeparator("tiny", demucs_repo, device="cpu").cache_params(), sort_keys=True))
    finally:
        torch.set_num_threads(before)
    assert len(keys) == 1


def test_the_gpu_stage_separates_and_explains_on_its_device_without_ray(demucs_repo, plugin_path, track, tmp_path):
    """The GPU stage takes a mix, separates it with demucs on its own device and explains it
    there; the result is the one of the same track given the (cached) stems. (That it
    imports no Ray: tests/test_layout.py.)"""
    from musiclime.explainer import ExplainerSpec
    from musiclime.gpu_stage import ExplainStage
    from musiclime.records import TrackInput
    mix = track.sum(0)[: SR * 2].astype(np.float32)
    spec = ExplainerSpec(num_samples=64)
    sep = ("demucs", {"model_name": "tiny", "repo": str(demucs_repo)}, str(tmp_path / "stems"))
    stage = ExplainStage("mlplugins:make", spec, "both", 4, "cpu", separator=sep)
    assert stage.separator.device == "cpu" and stage.separator.model.parameters().__next__().device.type == "cpu"
    fresh = stage(TrackInput("t", 0, 7, "la la land", SR, None, ("vocals", "drums", "bass", "other"), mix))
    assert fresh.input.timings["separate_s"] > 0 and stage.info()["cache"] == {"hits": 0, "misses": 1}
    stems, hit = StemCache(tmp_path / "stems").separate(stage.separator, mix, SR)
    assert hit
    plain = ExplainStage("mlplugins:make", spec, "both", 4, "cpu")
    given = plain(TrackInput("t", 0, 7, "la la land", SR, stems.numpy(), ("vocals", "drums", "bass", "other")))
    np.testing.assert_array_equal(fresh.probs, given.probs)
    assert fresh.input.stems is None and fresh.input.mix is None  # nothing heavy goes on to the fit
