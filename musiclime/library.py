"""The offline demo library: generated music with planted, known evidence.

Every track has four stems (vocals, drums, bass, other), their mix, a lyric, a genre
(5 classes) and an emotion (4 classes). The evidence for each label is planted where the
ground-truth table says:

- genre, audio: a genre signature fill on the drums stem in 2 segments, in ~70% of
  tracks; the drum groove and the bass timbre follow the genre too, but in unclear
  tracks they follow a random genre's (so only the fill is planted evidence);
- genre, lyrics: 3 words of the genre's vocabulary, in ~70% of tracks (independently);
- emotion, audio: the harmony pad on the ``other`` stem (mode, register, timbre, attack),
  all segments, clear in ~70% of tracks (the rest have a neutral pad);
- emotion, lyrics: 3 emotion words, in ~50% of tracks (so audio dominates emotion, yet
  the lyrics settle many of the tracks whose audio is neutral).

So each modality alone is ambiguous for genre (both matter), while audio dominates
emotion: the paper's findings, by construction.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musiclime.factorization import STEM_NAMES as STEMS

GENRES = ("rock", "hiphop", "electronic", "jazz", "folk")
EMOTIONS = ("happy", "sad", "angry", "calm")
N_SEGMENTS = 10

GENRE_WORDS = {
    "rock": "guitar highway rebel amplifier stage wild engine leather roar loud riot thunder".split(),
    "hiphop": "rhyme block hustle flow street crew beat mic hood cash cipher verse".split(),
    "electronic": "neon pulse laser circuit synth rave strobe digital wave signal voltage glow".split(),
    "jazz": "saxophone blue swing smoky velvet trumpet club midnight bourbon brass scat lounge".split(),
    "folk": "river meadow banjo cabin harvest fiddle prairie willow creek lantern barn homestead".split(),
}
EMOTION_WORDS = {
    "happy": "smile sunshine joy laugh bright celebrate glad cheer".split(),
    "sad": "tears lonely grief cry sorrow empty lost goodbye".split(),
    "angry": "rage hate burn scream fury fight smash war".split(),
    "calm": "peace gentle quiet breathe still soft slow rest".split(),
}
FILLER = ("we you i the a and to in on my your our all of it is was be go come know see feel "
          "time day way home back down up out over here there now then again when where with "
          "love heart night light road town walk talk hold call dream ride turn run").split()

GENRE_STYLE = {  # tempo (bpm), 16-step kick / snare / hat patterns
    "rock": (120, "x...x...x...x...", "....x.......x...", "x.x.x.x.x.x.x.x."),
    "hiphop": (88, "x.....x...x.....", "....x.......x...", "x.xxx.x.x.xxx.x."),
    "electronic": (128, "x...x...x...x...", "....x.......x...", "..x...x...x...x."),
    "jazz": (140, "x.........x.....", ".......x.......x", "x..xx..xx..xx..x"),
    "folk": (100, "x.......x.......", "....x.......x...", "x...x...x...x..."),
}
BASS_TIMBRE = {"rock": (8, 0.5), "hiphop": (2, 2.0), "electronic": (6, 1.0), "jazz": (3, 2.0),
               "folk": (4, 1.5)}  # harmonics, tilt
EMOTION_STYLE = {  # mode, pad root (Hz), harmonics, tilt, drive, level
    "happy": ("major", 392.0, 8, 1.0, 0.0, 0.35),
    "calm": ("major", 196.0, 2, 2.0, 0.0, 0.2),
    "sad": ("minor", 98.0, 5, 2.0, 0.0, 0.3),
    "angry": ("minor", 147.0, 10, 0.7, 5.0, 0.45),
}
MAJOR, MINOR = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10)
VOWELS = ((730, 1090), (530, 1840), (270, 2290), (570, 840), (300, 870))  # a e i o u (F1, F2)


@dataclass(frozen=True)
class TrackSpec:
    track_id: str
    genre: str
    emotion: str
    genre_audio: bool           # the genre signature is planted in the audio
    genre_lyrics: bool          # genre words are planted in the lyrics
    emotion_audio: bool         # the pad carries the emotion (else a neutral pad)
    emotion_lyrics: bool        # emotion words are planted in the lyrics
    fill_segments: tuple[int, ...]
    genre_tokens: tuple[str, ...]
    emotion_tokens: tuple[str, ...]
    seed: int


# ---------------------------------------------------------------- synthesis

def _env(n: int, sr: int, attack: float, decay: float) -> np.ndarray:
    t = np.arange(n) / sr
    return np.minimum(1.0, t / max(attack, 1e-4)) * np.exp(-t / max(decay, 1e-4))


def _osc(freq, n: int, sr: int, harmonics: int = 1, tilt: float = 1.0, phase: float = 0.0) -> np.ndarray:
    """Additive oscillator: ``harmonics`` partials with amplitude ``1/k**tilt`` (below Nyquist)."""
    t = np.arange(n) / sr
    freq = np.broadcast_to(np.asarray(freq, dtype=np.float64), (n,))
    ph = 2 * np.pi * np.cumsum(freq) / sr + phase
    out = np.zeros(n)
    for k in range(1, harmonics + 1):
        if k * freq.max() < sr / 2 * 0.9:
            out += np.sin(k * ph) / k ** tilt
    return out * (1 + 0 * t)


def _add(buf: np.ndarray, start: int, x: np.ndarray) -> None:
    if start >= len(buf):
        return
    end = min(len(buf), start + len(x))
    buf[start:end] += x[:end - start]


def _noise(rng, n):
    return rng.standard_normal(n)


def _highpass(x):
    return np.diff(x, prepend=0.0)


def _kick(rng, sr):
    n = int(0.25 * sr)
    t = np.arange(n) / sr
    return np.sin(2 * np.pi * np.cumsum(45 + 90 * np.exp(-t / 0.03)) / sr) * _env(n, sr, 0.002, 0.09)


def _snare(rng, sr):
    n = int(0.2 * sr)
    return 0.6 * _noise(rng, n) * _env(n, sr, 0.001, 0.05) + 0.4 * _osc(185, n, sr) * _env(n, sr, 0.001, 0.04)


def _hat(rng, sr):
    n = int(0.06 * sr)
    return 0.35 * _highpass(_noise(rng, n)) * _env(n, sr, 0.0005, 0.015)


def _fill(genre: str, rng, n: int, sr: int, step: int) -> np.ndarray:
    """The genre's drum signature, ``n`` samples long."""
    out = np.zeros(n)
    t = np.arange(n) / sr
    if genre == "rock":      # crash + descending tom roll
        out += 0.6 * _highpass(_noise(rng, n)) * np.exp(-t / 0.5)
        for i, f in enumerate(np.linspace(220, 90, max(1, n // step))):
            m = min(step, n - i * step)
            _add(out, i * step, 0.8 * _osc(f, m, sr) * _env(m, sr, 0.002, 0.08))
    elif genre == "hiphop":  # 808 boom + scratch chirps
        out += 0.9 * _osc(50 + 10 * np.exp(-t / 0.2), n, sr) * np.exp(-t / 0.6)
        for s in range(0, n - step, 2 * step):
            m = min(step, n - s)
            ts = np.arange(m) / sr
            _add(out, s, 0.5 * np.sin(2 * np.pi * np.cumsum(800 + 2500 * np.sin(ts * 40)) / sr) * _env(m, sr, 0.002, 0.05))
    elif genre == "electronic":  # noise riser + snare roll
        out += 0.5 * _highpass(_highpass(_noise(rng, n))) * (t / t[-1]) ** 2
        for s in range(0, n, max(1, step // 2)):
            _add(out, s, 0.4 * _snare(rng, sr)[: step // 2])
    elif genre == "jazz":    # ride bell: inharmonic partials on swung eighths
        for s in range(0, n, step):
            m = min(int(0.3 * sr), n - s)
            bell = sum(np.sin(2 * np.pi * 700 * r * np.arange(m) / sr) / (i + 1) for i, r in enumerate((1.0, 2.76, 5.4)))
            _add(out, s + (step // 3 if (s // step) % 2 else 0), 0.5 * bell * _env(m, sr, 0.001, 0.12))
    else:                    # folk: tambourine jingles
        for s in range(0, n, step // 2):
            m = min(int(0.08 * sr), n - s)
            jingle = sum(np.sin(2 * np.pi * f * np.arange(m) / sr) for f in (4100, 5300, 6200))
            _add(out, s, 0.3 * (jingle + _highpass(_noise(rng, m))) * _env(m, sr, 0.001, 0.03))
    return out


def _vowel_voice(f0: float, n: int, sr: int, vowel: tuple[int, int], rng) -> np.ndarray:
    t = np.arange(n) / sr
    f = f0 * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))  # vibrato
    ph = 2 * np.pi * np.cumsum(f) / sr
    out = np.zeros(n)
    for k in range(1, 20):
        fk = k * f0
        if fk > sr / 2 * 0.9:
            break
        amp = sum(np.exp(-((fk - F) / 120.0) ** 2) for F in vowel) + 0.05 / k
        out += amp * np.sin(k * ph)
    return out / 3.0 * _env(n, sr, 0.03, n / sr)


def synthesize(spec: TrackSpec, sample_rate: int, seconds: float) -> np.ndarray:
    """The four stems ``float32 [4, n_samples]`` of a track spec."""
    rng = np.random.default_rng(spec.seed)
    sr = sample_rate
    n = int(seconds * sr)
    seg = n // N_SEGMENTS
    pattern_genre = spec.genre if spec.genre_audio else str(rng.choice(GENRES))
    bpm, kick_p, snare_p, hat_p = GENRE_STYLE[pattern_genre]
    bpm *= rng.uniform(0.95, 1.05)
    step = int(60 / bpm / 4 * sr)
    vocals, drums, bass, other = (np.zeros(n) for _ in range(4))
    kick, snare, hat = _kick(rng, sr), _snare(rng, sr), _hat(rng, sr)
    fills = set(spec.fill_segments) if spec.genre_audio else set()
    for i, s in enumerate(range(0, n, step)):
        if s // seg in fills:
            continue  # the fill replaces the groove in its segment
        j = i % 16
        if kick_p[j] == "x":
            _add(drums, s, kick)
        if snare_p[j] == "x":
            _add(drums, s, snare)
        if hat_p[j] == "x":
            _add(drums, s, hat * rng.uniform(0.6, 1.0))
    mode_name, pad_root, harmonics, tilt, drive, level = EMOTION_STYLE[spec.emotion]
    if not spec.emotion_audio:  # a neutral pad: nothing in it tells the emotion
        mode_name, pad_root, harmonics, tilt, drive, level = str(rng.choice(["major", "minor"])), 196.0, 4, 1.5, 0.0, 0.3
    # slow pads for calm and sad; a neutral pad's attack is random (no emotion leaks through it)
    attack = (0.3 if spec.emotion in ("calm", "sad") else 0.02) if spec.emotion_audio else float(rng.choice([0.3, 0.02]))
    scale = MAJOR if mode_name == "major" else MINOR
    key = 2 ** (int(rng.integers(-2, 3)) / 12)
    bass_root = 55.0 * key * 2 ** (int(rng.integers(0, 5)) / 12)
    progression = [0, 5, 3, 4] if mode_name == "major" else [0, 5, 3, 6]
    chord_len = n // 4
    for c, degree in enumerate(progression):
        start, m = c * chord_len, chord_len
        root = pad_root * key * 2 ** (scale[degree % 7] / 12)
        chord = np.zeros(m)
        for interval in (0, 2, 4):  # a triad in the scale: major or minor by the mode
            d = degree + interval
            semis = scale[d % 7] + 12 * (d // 7) - scale[degree % 7]
            chord += _osc(root * 2 ** (semis / 12), m, sr, harmonics, tilt, phase=rng.uniform(0, 6.28))
        chord *= _env(m, sr, attack, 4.0)
        if drive:
            chord = np.tanh(drive * chord) / np.tanh(drive)
        _add(other, start, level * chord / 3)
        broot = bass_root * 2 ** (scale[degree % 7] / 12)
        b_harm, b_tilt = BASS_TIMBRE[pattern_genre]
        for s in range(start, start + m, 8 * step):  # root notes on half bars
            k = min(8 * step, n - s)
            _add(bass, s, 0.6 * _osc(broot, k, sr, b_harm, b_tilt) * _env(k, sr, 0.01, 0.5))
    for k in fills:
        a = k * seg
        fade = np.minimum(1, np.minimum(np.arange(seg), np.arange(seg)[::-1]) / (0.01 * sr))
        drums[a:a + seg] += fade * _fill(spec.genre, rng, seg, sr, step)
    # vocals: a melody in the key, one vowel per note
    note_len = 2 * step
    f_base = 220.0 * key
    for s in range(0, n, note_len):
        if rng.random() < 0.25:
            continue  # breaths
        deg = int(rng.integers(0, 8))
        f0 = f_base * 2 ** ((scale[deg % 7] + 12 * (deg // 7)) / 12)
        m = min(note_len, n - s)
        _add(vocals, s, 0.25 * _vowel_voice(f0, m, sr, VOWELS[int(rng.integers(0, 5))], rng))
    stems = np.stack([vocals, drums, bass, other]).astype(np.float32)
    return stems


def write_lyrics(spec: TrackSpec) -> str:
    rng = np.random.default_rng(spec.seed + 1)
    words = list(rng.choice(FILLER, size=int(rng.integers(28, 40))))
    planted = [w for w in spec.genre_tokens for _ in range(int(rng.integers(1, 3)))]
    planted += list(spec.emotion_tokens)
    for w in planted:
        words.insert(int(rng.integers(0, len(words) + 1)), w)
    lines, i = [], 0
    while i < len(words):
        k = int(rng.integers(5, 9))
        lines.append(" ".join(words[i:i + k]))  # lower case: lime features are case-sensitive
        i += k
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the library

def track_specs(n_tracks: int, seed: int) -> list[TrackSpec]:
    rng = np.random.default_rng(seed)
    specs = []
    for i in range(n_tracks):
        genre = GENRES[i % len(GENRES)]
        emotion = EMOTIONS[int(rng.integers(0, len(EMOTIONS)))]
        g_audio, g_lyrics = bool(rng.random() < 0.7), bool(rng.random() < 0.7)
        e_audio, e_lyrics = bool(rng.random() < 0.7), bool(rng.random() < 0.5)
        fills = tuple(sorted(int(x) for x in rng.choice(N_SEGMENTS, size=2, replace=False))) if g_audio else ()
        g_tokens = tuple(rng.choice(GENRE_WORDS[genre], size=3, replace=False)) if g_lyrics else ()
        e_tokens = tuple(rng.choice(EMOTION_WORDS[emotion], size=3, replace=False)) if e_lyrics else ()
        specs.append(TrackSpec(f"demo-{i:05d}", genre, emotion, g_audio, g_lyrics, e_audio, e_lyrics,
                               fills, tuple(map(str, g_tokens)), tuple(map(str, e_tokens)),
                               int(rng.integers(0, 2 ** 31))))
    return specs


def split_of(track_id: str, test_fraction: float = 0.2) -> str:
    """``train`` or ``test``, from a hash of the id: stable whatever the library size."""
    h = int.from_bytes(hashlib.blake2b(track_id.encode(), digest_size=4).digest(), "little")
    return "test" if h / 2 ** 32 < test_fraction else "train"


def ground_truth_rows(spec: TrackSpec) -> list[dict]:
    rows = []
    base = dict(track_id=spec.track_id)
    for k in spec.fill_segments:
        rows.append(dict(base, task="genre", label=spec.genre, modality="audio", stem="drums", segment=k, token=None))
    for w in spec.genre_tokens:
        rows.append(dict(base, task="genre", label=spec.genre, modality="lyrics", stem=None, segment=None, token=w))
    if spec.emotion_audio:
        rows.append(dict(base, task="emotion", label=spec.emotion, modality="audio", stem="other", segment=None, token=None))
    for w in spec.emotion_tokens:
        rows.append(dict(base, task="emotion", label=spec.emotion, modality="lyrics", stem=None, segment=None, token=w))
    return rows


def _write_track(spec: TrackSpec, root: Path, sample_rate: int, seconds: float) -> dict:
    import soundfile as sf
    stems = synthesize(spec, sample_rate, seconds)
    peak = float(np.abs(stems.sum(0)).max())
    stems *= 0.8 / max(peak, 1e-6)
    row: dict = dict(track_id=spec.track_id)
    tdir = root / "stems" / spec.track_id
    tdir.mkdir(parents=True, exist_ok=True)
    q = []
    for name, x in zip(STEMS, stems):
        p = tdir / f"{name}.flac"
        sf.write(p, x, sample_rate, subtype="PCM_16")
        q.append(sf.read(p, dtype="float32")[0])  # the mix is the sum of the stems as stored
        row[f"{name}_path"] = str(p.relative_to(root))
    mix = root / "audio" / f"{spec.track_id}.flac"
    sf.write(mix, np.clip(np.sum(q, axis=0), -1, 1), sample_rate, subtype="PCM_24")
    lyrics = write_lyrics(spec)
    lp = root / "lyrics" / f"{spec.track_id}.txt"
    lp.write_text(lyrics, encoding="utf-8")
    row.update(audio_path=str(mix.relative_to(root)), lyrics=lyrics, lyrics_path=str(lp.relative_to(root)),
               genre=spec.genre, emotion=spec.emotion, split=split_of(spec.track_id), duration_s=seconds)
    return row


def make_library(out: str | Path, tracks: int = 400, seed: int = 0, sample_rate: int = 16000,
                 seconds: float = 10.0, workers: int | None = None, progress=None) -> Path:
    """Generate the library into ``out``; returns the catalogue path.

    Writes ``catalogue.parquet`` (paths relative to ``out``), ``ground_truth.parquet``,
    ``library.json`` and the audio/stems/lyrics files. Re-running with the same
    arguments reuses a complete library.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    root = Path(out)
    params = dict(tracks=tracks, seed=seed, sample_rate=sample_rate, seconds=seconds, version=5)
    meta = root / "library.json"
    if meta.is_file() and json.loads(meta.read_text()) == params and (root / "catalogue.parquet").is_file():
        return root / "catalogue.parquet"
    for d in ("audio", "stems", "lyrics"):
        (root / d).mkdir(parents=True, exist_ok=True)
    specs = track_specs(tracks, seed)
    workers = workers or min(2, os.cpu_count() or 1)
    rows = []
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(workers) as pool:
            futs = [pool.submit(_write_track, s, root, sample_rate, seconds) for s in specs]
            for i, f in enumerate(futs):
                rows.append(f.result())
                if progress:
                    progress(i + 1, len(specs))
    else:
        for i, s in enumerate(specs):
            rows.append(_write_track(s, root, sample_rate, seconds))
            if progress:
                progress(i + 1, len(specs))
    pq.write_table(pa.Table.from_pylist(rows), root / "catalogue.parquet")
    truth = [r for s in specs for r in ground_truth_rows(s)]
    schema = pa.schema([("track_id", pa.string()), ("task", pa.string()), ("label", pa.string()),
                        ("modality", pa.string()), ("stem", pa.string()), ("segment", pa.int32()),
                        ("token", pa.string())])
    pq.write_table(pa.Table.from_pylist(truth, schema=schema), root / "ground_truth.parquet")
    meta.write_text(json.dumps(params))
    return root / "catalogue.parquet"


def track_factorizations(root: str | Path, row: dict, sample_rate: int, n_segments: int = N_SEGMENTS):
    """A library track's audio (its true stems) and lyrics factorizations."""
    from musiclime.audio_io import read_audio
    from musiclime.factorization import AudioFactorization, LyricsFactorization
    root = Path(root)
    stems = [read_audio(root / row[f"{s}_path"], sample_rate)[0] for s in STEMS]
    n = min(len(x) for x in stems)
    return (AudioFactorization(np.stack([x[:n] for x in stems]), sample_rate, n_segments, STEMS),
            LyricsFactorization(row["lyrics"]))
