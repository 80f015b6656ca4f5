"""Test catalogues: planted tracks and every kind of bad input."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

SR = 16000


def planted_audio(rng, seconds=3.0, sr=SR, loud_segment=None):
    n = int(seconds * sr)
    x = rng.normal(0, 0.05, n).astype(np.float32)
    if loud_segment is not None:
        seg = n // 10
        x[loud_segment * seg:(loud_segment + 1) * seg] = rng.normal(0, 0.5, seg)
    return x


def bad_input_catalogue(root: Path) -> tuple[Path, dict, dict]:
    """Returns (catalogue path, {track_id: expected error_type}, {track_id: expected flags})."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows, errors, flags = [], {}, {}

    def wav(name, data, sr=SR, **kw):
        p = root / name
        sf.write(p, data, sr, **kw)
        return str(p)

    def add(tid, audio_path, lyrics="a storm is coming", error=None, flag=None, **extra):
        rows.append(dict(track_id=tid, audio_path=audio_path, lyrics=lyrics, lyrics_path=None, **extra))
        if error:
            errors[tid] = error
        if flag is not None:
            flags[tid] = flag

    add("good", wav("good.wav", planted_audio(rng, loud_segment=2)), flag=[])
    add("missing", str(root / "nowhere.wav"), error="missing_file")
    (root / "corrupt.wav").write_bytes(b"RIFF" + os.urandom(4000))
    add("corrupt", str(root / "corrupt.wav"), error="decode_error")
    flac = root / "full.flac"
    sf.write(flac, planted_audio(rng), SR)
    data = flac.read_bytes()
    (root / "truncated.flac").write_bytes(data[:60])
    add("truncated", str(root / "truncated.flac"), error="decode_error")
    add("empty", wav("empty.wav", np.zeros(0, np.float32)), error="empty_audio")
    add("silent", wav("silent.wav", np.zeros(SR * 2, np.float32)), error="silent_audio")
    add("tiny", wav("tiny.wav", np.array([0.1, -0.1, 0.2, 0.1, -0.2], np.float32)), error="too_short")
    (root / "latin1.txt").write_bytes("café storm déjà".encode("latin-1"))
    rows.append(dict(track_id="bad-lyrics", audio_path=wav("bl.wav", planted_audio(rng)), lyrics=None,
                     lyrics_path=str(root / "latin1.txt")))
    errors["bad-lyrics"] = "lyrics_decode_error"
    add("good", wav("dup.wav", planted_audio(rng)))           # a repeated track_id
    errors["good#dup"] = "duplicate_track_id"
    add("sr8k", wav("sr8k.wav", planted_audio(rng, sr=8000), sr=8000), flag=["resampled"])
    add("sr96k", wav("sr96k.wav", planted_audio(rng, sr=96000), sr=96000), flag=["resampled"])
    six = np.stack([planted_audio(rng) for _ in range(6)], axis=1)
    add("six-channel", wav("six.wav", six), flag=["downmixed"])
    add("no-lyrics", wav("nolyr.wav", planted_audio(rng)), lyrics="", flag=["no_lyrics"])
    add("long", wav("long.wav", planted_audio(rng, seconds=5.0)), flag=["cropped"])
    add("../../escape/../x", wav("esc.wav", planted_audio(rng)), flag=[])
    add("a/b/c", wav("abc.wav", planted_audio(rng)), flag=[])
    cat = root / "catalogue.parquet"
    pq.write_table(pa.Table.from_pylist(rows), cat)
    return cat, errors, flags
