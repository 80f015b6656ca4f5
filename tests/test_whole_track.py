"""``--window whole``: the track heard window by window (issue: real libraries)."""

from __future__ import annotations

import numpy as np
import soundfile as sf
import torch

from musiclime import MusicLIME
from musiclime.factorization import AudioFactorization, LyricsFactorization
from musiclime.stages import DecodeSpec, decode
from musiclime.whole_track import WholeTrack, window_count, windows_of

SR = 8000


class LoudWindow:
    """A clip model of 2 s: p(loud) from the loudest quarter-second of what it hears."""

    classes = ["quiet", "loud"]
    sample_rate = SR
    window_seconds = 2.0

    def __init__(self):
        self.calls, self.max_rows = 0, 0

    def predict_proba(self, audio, lyrics):
        audio = torch.as_tensor(audio, dtype=torch.float32)
        assert audio.shape[1] <= int(self.window_seconds * SR)  # it never hears more than its window
        self.calls += 1
        self.max_rows = max(self.max_rows, audio.shape[0])
        n = audio.shape[1] // 8 * 8
        e = audio[:, :n].reshape(len(audio), 8, -1).pow(2).mean(-1).amax(-1)
        p = torch.sigmoid(e.double() / 0.02 - 3.0)
        return torch.stack([1 - p, p], 1).numpy()


class LoudLateFusion(LoudWindow):
    """The same function as encoders and a head (the text encoder counts its rows)."""

    def __init__(self):
        super().__init__()
        self.text_rows = 0

    def embed_audio(self, audio):
        assert audio.shape[1] <= int(self.window_seconds * SR)
        n = audio.shape[1] // 8 * 8
        return audio[:, :n].reshape(len(audio), 8, -1).pow(2).mean(-1).amax(-1, keepdim=True)

    def embed_lyrics(self, lyrics):
        self.text_rows += len(lyrics)
        return torch.zeros(len(lyrics), 1)

    def head(self, a, t):
        p = torch.sigmoid(a[:, 0].double() / 0.02 - 3.0)
        return torch.stack([1 - p, p], 1)


def track(tmp_path, seconds: float, loud_at: tuple[float, float] | None):
    x = np.random.default_rng(0).normal(0, 0.02, int(seconds * SR)).astype(np.float32)
    if loud_at:
        a, b = (int(t * SR) for t in loud_at)
        x[a:b] = np.random.default_rng(1).normal(0, 0.5, b - a)
    path = tmp_path / f"t{seconds}.wav"
    sf.write(path, x, SR)
    return dict(track_id="t", catalogue_row=0, audio_path=str(path), lyrics="loud and clear")


def explain(row, window: str, model, max_seconds: float, num_samples: int = 256, batch: int = 8):
    inp = decode(
        row, DecodeSpec(separator="none", max_seconds=max_seconds, model_window=model.window_seconds, window=window), SR
    )
    af = AudioFactorization(inp.stems, SR, 10, inp.stem_names)
    heard = WholeTrack(model, model.window_seconds, batch=batch) if window == "whole" else model
    exp = MusicLIME(num_samples=num_samples, seed=0).explain(heard, af, LyricsFactorization(inp.lyrics), labels=[1])
    return inp, af, exp


def test_windows_cover_the_track_and_the_last_ends_at_its_end():
    a = torch.arange(10.0)[None]
    w = windows_of(a, 4)
    assert window_count(10, 4) == 3 and w.shape == (1, 3, 4)
    assert w[0, 0].tolist() == [0, 1, 2, 3] and w[0, 2].tolist() == [6, 7, 8, 9]
    assert windows_of(a, 16).shape == (1, 1, 10)


def test_evidence_in_the_last_fifth_is_seen_by_whole_and_not_by_middle(tmp_path):
    row = track(tmp_path, 20.0, loud_at=(17.0, 18.5))
    model = LoudWindow()
    inp, af, exp = explain(row, "whole", model, 600.0)
    assert af.explained_length == 20 * SR and inp.about.window_start_s == 0.0
    audio = [(name, w) for modality, name, w in exp.as_list(1) if modality == "audio"]
    assert audio[0][0] in ("mix@8", "mix@9") and audio[0][1] > 0.1, audio[:3]
    assert model.max_rows <= 8  # windows of several masks per call, never more than the batch
    _, af_mid, mid = explain(row, "middle", LoudWindow(), 600.0)
    assert af_mid.explained_length == 2 * SR  # the middle of what the model hears
    assert max(abs(w) for m, _, w in mid.as_list(1) if m == "audio") < 0.02  # nothing loud there


def test_a_track_shorter_than_one_window_is_the_same_either_way(tmp_path):
    row = track(tmp_path, 1.5, loud_at=(0.5, 0.7))
    _, _, whole = explain(row, "whole", LoudWindow(), 600.0)
    _, _, middle = explain(row, "middle", LoudWindow(), 30.0)
    assert whole.as_list(1) == middle.as_list(1)
    assert np.array_equal(whole.probabilities, middle.probabilities)


def test_late_fusion_runs_the_text_encoder_once_per_lyric_mask_not_per_window(tmp_path):
    row = track(tmp_path, 20.0, loud_at=(17.0, 18.5))
    plain, fused = LoudWindow(), LoudLateFusion()
    _, _, a = explain(row, "whole", plain, 600.0)
    _, _, b = explain(row, "whole", fused, 600.0)
    assert np.allclose(a.probabilities, b.probabilities)
    assert [n for _, n, _ in a.as_list(1)][:3] == [n for _, n, _ in b.as_list(1)][:3]
    assert fused.text_rows <= 256  # distinct lyric half-masks, not x 10 windows


def test_a_ten_minute_track_is_explained_within_bounded_memory(tmp_path):
    """10 minutes at 8 kHz, 300 windows of 2 s per perturbation: blocks of perturbed audio
    (compose_rows) and model calls (a batch of windows) stay small: the peak grows by a few
    hundred MB, where 64 perturbations of the track at once would be 1.2 GB and their windows
    as many again."""
    import os
    import subprocess
    import sys

    row = track(tmp_path, 600.0, loud_at=(590.0, 591.0))
    code = f"""
import resource, sys
from tests.test_whole_track import LoudWindow, explain
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
inp, af, exp = explain({row!r}, "whole", LoudWindow(), 600.0, num_samples=64, batch=150)
top = [n for m, n, w in exp.as_list(1) if m == "audio"][0]
print(top, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    top, grown_mb = out.stdout.split()
    assert top == "mix@9"
    assert float(grown_mb) < 500, grown_mb
