"""The clips of the musicnn parity fixture, made the same way every time: demo-library tracks of
five genres, rendered scores (chorale, madrigal, string quartet, quartet with drums) and
synthetic signals (a tone, a loud tone, a chord, noise, silence). 16 kHz mono float32.

``python -m tests.musicnn_clips DIR`` writes them as float WAV files for
``bench/musicnn_reference.py``, which runs musicnn's own TensorFlow code on them."""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

import numpy as np

SR, SECONDS = 16000, 6.0
DEMO = ("demo-00000", "demo-00001", "demo-00002", "demo-00003", "demo-00004")  # rock, hiphop, electronic, jazz, folk


def synthetic() -> dict[str, np.ndarray]:
    t = np.arange(int(SR * SECONDS)) / SR
    rng = np.random.default_rng(0)
    chord = sum(0.05 * np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0)) * (1 + 0.5 * np.sin(2 * np.pi * 2 * t))
    clips = {
        "tone": 0.05 * np.sin(2 * np.pi * 440 * t),
        "loud-tone": 0.8 * np.sin(2 * np.pi * 220 * t),
        "chord": chord,
        "noise": 0.1 * rng.standard_normal(len(t)),
        "silence": np.zeros(len(t)),
    }
    return {k: v.astype(np.float32) for k, v in clips.items()}


def demo() -> dict[str, np.ndarray]:
    import soundfile as sf

    from musiclime.library import make_library

    with tempfile.TemporaryDirectory() as d:
        make_library(d, tracks=len(DEMO), seed=0, sample_rate=SR, seconds=SECONDS, workers=1)
        return {t: sf.read(Path(d) / "audio" / f"{t}.flac", dtype="float32")[0] for t in DEMO}


def rendered() -> dict[str, np.ndarray]:
    """Raises :class:`musiclime.scores.RenderUnavailable` without FluidSynth."""
    from musiclime import scores

    choir, strings = scores.pieces("choir", 2), scores.pieces("strings", 2)
    parts = {
        "chorale": (choir[0], "choir", False),
        "madrigal": (choir[1], "choir", False),
        "quartet": (strings[0], "strings", False),
        "quartet+drums": (strings[1], "strings", True),
    }
    out = {}
    for name, (path, kind, drums) in parts.items():
        stems = scores.render_piece(path, kind, SECONDS, SR, drums)
        out[name] = np.clip(sum(stems.values()), -1, 1).astype(np.float32)
    return out


def digest(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x, dtype="<f4").tobytes()).hexdigest()[:16]


if __name__ == "__main__":
    import soundfile as sf

    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, x in {**demo(), **rendered(), **synthetic()}.items():
        sf.write(out / f"{name}.wav", x, SR, subtype="FLOAT")
        print(name, digest(x))
