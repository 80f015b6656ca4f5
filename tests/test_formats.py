"""Decoding real formats through PyAV: windows after a seek equal a full decode, bad files
are typed error rows, remote files are read by ranges (issue: real libraries)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from musiclime.audio_io import read_window
from musiclime.av_decode import decode_window
from musiclime.errors import InputError
from tests.real_library import FORMATS, SUFFIX, encode

SR = 16000
LOSSLESS = {"alac", "flac", "wav", "aiff"}


def music(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Tones with a moving envelope and a little noise: every window differs."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.3 * t))
    return (x + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("kind", [*FORMATS, "vorbis"])
def test_a_window_after_a_seek_is_the_same_span_of_a_full_decode(tmp_path, kind):
    # AAC without perceptual noise substitution: see the next test for files that use it
    options = {"aac_pns": "0"} if kind in ("aac", "adts") else None
    path = encode(tmp_path / f"x{SUFFIX[kind]}", music(12.0), SR, kind, options)
    full = decode_window(str(path), None)
    win = decode_window(str(path), 4.0)
    start = int(round(win.start_s * win.sample_rate))
    n = win.audio.shape[1]
    assert n == int(4.0 * win.sample_rate) and "cropped" in win.flags
    # the middle of the header's length (ADTS: an estimate from the bit rate, within 5%)
    assert abs(win.start_s - (full.audio.shape[1] / full.sample_rate - 4.0) / 2) < (0.3 if kind == "adts" else 0.05)

    def diff(lag: int) -> float:
        return float(np.abs(full.audio[:, start + lag : start + lag + n] - win.audio).max())

    if kind in LOSSLESS:
        assert diff(0) == 0.0, kind  # bit-identical
    else:
        assert diff(0) <= 1e-3, (kind, diff(0))
        assert min(range(-2, 3), key=diff) == 0  # aligned to the sample


def test_aac_noise_substitution_is_the_one_lossy_difference_after_a_seek(tmp_path):
    """AAC's perceptual noise substitution (PNS: FFmpeg's encoder uses it by default) makes
    the decoder draw noise from a generator whose state depends on every frame decoded
    before: a window after a seek has other noise in those bands than a full decode (same
    spectrum, other samples; measured 0.024 max abs on this stereo file, 4e-6 mono). The
    window itself is the same on every decode: explanations stay deterministic."""
    path = encode(tmp_path / "pns.m4a", music(12.0), SR, "aac")
    full, a, b = decode_window(str(path), None), decode_window(str(path), 4.0), decode_window(str(path), 4.0)
    assert np.array_equal(a.audio, b.audio)
    s = int(round(a.start_s * a.sample_rate))
    ref = full.audio[:, s : s + a.audio.shape[1]]
    err = ref - a.audio
    assert 1e-3 < np.abs(err).max() < 0.05  # the substituted noise, no more
    assert np.sqrt((err**2).mean()) < 0.05 * np.sqrt((ref**2).mean())  # well under the signal


def test_lossless_samples_equal_libsndfile_and_the_old_window(tmp_path):
    """Standing outputs of WAV/FLAC libraries are unchanged by the decoder switch: the same
    samples and the same middle window as soundfile gave."""
    import soundfile as sf

    x = np.stack([music(9.0, 44100), music(9.0, 44100, 1)]).T
    for name, subtype in (("a.wav", "PCM_16"), ("b.wav", "PCM_24"), ("c.flac", "PCM_16"), ("d.wav", "FLOAT")):
        sf.write(tmp_path / name, x, 44100, subtype=subtype)
        with sf.SoundFile(tmp_path / name) as f:
            keep = int(4.0 * 44100)
            f.seek((f.frames - keep) // 2)
            ref = f.read(keep, dtype="float32", always_2d=True).T
        got = decode_window(str(tmp_path / name), 4.0).audio
        assert np.array_equal(ref, got), name


def test_a_long_compressed_file_costs_the_window_not_the_file(tmp_path):
    path = encode(tmp_path / "long.m4a", music(180.0, 22050), 22050, "aac")  # 3 minutes of AAC, stereo
    tracemalloc.start()
    try:
        d = read_window(str(path), SR, max_seconds=10.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    window = int(10.0 * 44100) * 2 * 4  # the window, stereo float32 at the file's rate
    assert d.audio.shape == (10 * SR,) and peak < 2.5 * window, peak


def test_a_header_that_overstates_the_length_is_found_out(tmp_path):
    """A cut download: the header (FLAC STREAMINFO, MP3 Xing) still says 30 s. The window is
    centred on the true end once decoding finds it, and the track is flagged truncated."""
    for kind in ("flac", "mp3"):
        whole = encode(tmp_path / f"w.{kind}", music(30.0), SR, kind).read_bytes()
        cut = tmp_path / f"cut.{kind}"
        cut.write_bytes(whole[: len(whole) * 6 // 10])  # about 18 s of audio
        full = decode_window(str(cut), None)
        true_s = full.audio.shape[1] / full.sample_rate
        assert 16.0 < true_s < 20.0
        win = decode_window(str(cut), 8.0)
        assert "truncated" in win.flags and "cropped" in win.flags
        assert abs(win.start_s - (true_s - 8.0) / 2) < 0.05, (kind, win.start_s, true_s)
        assert win.audio.shape[1] == 8 * win.sample_rate
        s = int(round(win.start_s * win.sample_rate))
        assert np.abs(full.audio[:, s : s + win.audio.shape[1]] - win.audio).max() <= 1e-3


def test_bad_files_are_typed_errors_never_crashes(tmp_path):
    from tests.real_library import protect, video_only

    aac = encode(tmp_path / "a.m4a", music(3.0), SR, "aac")
    cases = {
        protect(aac, tmp_path / "p.m4a"): "encrypted",
        video_only(tmp_path / "v.mp4"): "no_audio_stream",
    }
    rng = np.random.default_rng(3)
    for i in range(25):  # random bytes sometimes probe as an odd container: still decode_error
        p = tmp_path / f"r{i}.mp3"
        p.write_bytes(rng.bytes(int(rng.integers(1, 40000))))
        cases[p] = "decode_error"
    (tmp_path / "empty.wav").write_bytes(b"")
    cases[tmp_path / "empty.wav"] = "decode_error"
    head = tmp_path / "head.m4a"  # the moov box is at the end: a cut .m4a has no index left
    head.write_bytes(aac.read_bytes()[: aac.stat().st_size // 2])
    cases[head] = "decode_error"
    for path, code in cases.items():
        with pytest.raises(InputError) as e:
            read_window(str(path), SR, max_seconds=2.0)
        assert e.value.code == code, (path.name, e.value.code, e.value.message)
        assert path.name in e.value.message


def test_any_rate_and_channel_count_is_resampled_once_and_downmixed(tmp_path):
    import av

    for rate, layout in ((8000, "mono"), (96000, "5.1"), (192000, "stereo")):
        path = tmp_path / f"x{rate}.flac"
        n = rate * 2
        ch = av.AudioLayout(layout).nb_channels
        with av.open(str(path), "w") as out:
            s = out.add_stream("flac", rate=rate)
            s.layout = layout
            x = (np.tile(music(2.0, rate)[None], (ch, 1)) * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x.T.reshape(1, -1)), format="s16", layout=layout)
            frame.sample_rate = rate
            for p in [*s.encode(frame), *s.encode(None)]:
                out.mux(p)
        d = read_window(str(path), SR)
        assert d.audio.shape == (2 * SR,) and d.sample_rate == SR
        assert ("downmixed" in d.flags) == (ch > 1) and ("resampled" in d.flags) == (rate != SR), (rate, d.flags)
        assert n == 2 * rate


def test_remote_windows_read_about_the_window(tmp_path, s3):
    """A 30 s window of a 10-minute FLAC on S3 reads about the window's bytes, in few requests."""
    from musiclime import storage

    path = encode(tmp_path / "ten.flac", music(600.0), SR, "flac")
    size = path.stat().st_size
    remote = "s3://lib/formats/ten.flac"
    storage.write_bytes(remote, path.read_bytes())
    src = storage.readable(remote)
    assert isinstance(src, storage.RangeReader)
    d = decode_window(src, 30.0, "ten.flac")
    window_bytes = size * 30 / 600
    assert d.audio.shape[1] == 30 * d.sample_rate
    # measured: 2.2 MB in 11 requests for a 1.3 MB window of a 25.5 MB file (bench/bench_decode.py)
    assert src.bytes_read < 2.5 * window_bytes, (src.bytes_read, window_bytes)
    assert src.requests <= 16, src.requests
    assert src.closed is False
    src.close()
    # the header alone (provided stems' rates and lengths): a few KB
    from musiclime.av_decode import probe

    head = storage.readable(remote)
    assert probe(head, "ten.flac") == (d.sample_rate, 600 * d.sample_rate) and head.bytes_read < 256 << 10
    head.close()
    local = decode_window(str(path), 30.0)
    assert np.array_equal(local.audio, d.audio)
