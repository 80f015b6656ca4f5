"""Bounds on what one catalogue row can cost: lyrics words and audio length."""
from __future__ import annotations

import tracemalloc

import numpy as np
import soundfile as sf

from musiclime.audio_io import read_audio
from musiclime.factorization import LyricsFactorization, truncate_words
from musiclime.stages import decode
from pipeline.config import ExplainConfig


def test_truncate_words_keeps_a_prefix_with_the_cap_of_distinct_words():
    words = [f"w{i}" for i in range(1500)]
    text = " ".join(words + words[:10]) + "!"
    cut, truncated = truncate_words(text, 1000)
    assert truncated and text.startswith(cut)
    assert LyricsFactorization(cut).n_features == 1000
    same, truncated = truncate_words("la la la, love la", 2)
    assert not truncated and same == "la la la, love la"  # repeats are one word
    assert truncate_words("a b c", 0) == ("", True)


def test_decode_flags_truncated_lyrics(tmp_path):
    sf.write(tmp_path / "a.wav", np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32), 16000)
    row = dict(track_id="t", catalogue_row=0, audio_path=str(tmp_path / "a.wav"),
               lyrics=" ".join(f"word{i}" for i in range(40)))
    cfg = ExplainConfig(catalogue="c", model="m", out="o", separator="none", max_words=25)
    inp = decode(row, cfg.decode_spec(), 16000)
    assert "lyrics_truncated" in inp.flags
    assert LyricsFactorization(inp.lyrics).n_features == 25
    assert "lyrics_truncated" not in decode(dict(row, lyrics="short words"), cfg.decode_spec(), 16000).flags


def test_long_audio_costs_the_window_not_the_file(tmp_path):
    """A 6-minute 48 kHz stereo file explained over 30 s: only the window is decoded."""
    sr, minutes, window = 48000, 6, 30.0
    rng = np.random.default_rng(0)
    path = tmp_path / "long.wav"
    sf.write(path, rng.integers(-3000, 3000, size=(sr * 60 * minutes, 2), dtype=np.int16), sr, subtype="PCM_16")
    whole_float32 = sr * 60 * minutes * 2 * 4  # 138 MB: what decoding the file would cost
    tracemalloc.start()
    try:
        audio, flags = read_audio(path, sr, max_seconds=window)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "cropped" in flags and "downmixed" in flags
    assert audio.shape == (int(sr * window),)
    window_stereo = int(sr * window) * 2 * 4  # 11.5 MB
    assert peak < 2 * window_stereo, peak  # measured: 1.5 windows (the read + the downmix)
    assert whole_float32 > 10 * window_stereo
    # the middle of the file: the window starts (6 min - 30 s) / 2 in
    start = (sr * 60 * minutes - int(sr * window)) // 2
    ref, _ = sf.read(path, start=start, frames=16, dtype="float32")
    np.testing.assert_allclose(audio[:16], ref.mean(axis=1), atol=1e-6)
