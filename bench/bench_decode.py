"""Decoding real formats (issue: real libraries): seconds and peak memory (numpy's, traced) to decode a 30 s
window of a 4-minute file per format against the release before's WAV path (soundfile);
bytes and requests to read that window from a remote store; folder scans per second; and
``--window whole`` seconds per track against the number of windows (CPU).

``python bench/bench_decode.py`` writes bench/results/decode.json (and the docs table via
bench/update_readme.py).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, write_result  # noqa: E402
from tests.real_library import FORMATS, SUFFIX, encode  # noqa: E402

SR = 16000


def music(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.3 * t))
    return (x + 0.02 * np.random.default_rng(0).standard_normal(len(t))).astype(np.float32)


_CHILD = """
import sys, time
sys.path.insert(0, {root!r})
path, how = sys.argv[1], sys.argv[2]
if how == "soundfile":
    import soundfile as sf
    sf.info(path)
    def run():
        with sf.SoundFile(path) as f:
            keep = int(30 * f.samplerate)
            f.seek((f.frames - keep) // 2)
            return f.read(keep, dtype="float32", always_2d=True)
else:
    import av
    from musiclime.av_decode import decode_window
    av.open(path).close()
    def run():
        return decode_window(path, 30.0).audio
import tracemalloc  # numpy's arrays are traced (the decoders' own buffers are not)
run()
tracemalloc.start()
run()
grown = tracemalloc.get_traced_memory()[1] / 2**20
tracemalloc.stop()
t = []
for _ in range(5):
    t0 = time.perf_counter(); run(); t.append(time.perf_counter() - t0)
print(sorted(t)[2], grown)
"""


def decode_row(path: Path, how: str) -> dict:
    code = _CHILD.format(root=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run([sys.executable, "-c", code, str(path), how], capture_output=True, text=True, check=True)
    seconds, grown = out.stdout.split()
    return {"seconds": float(seconds), "peak_mb": float(grown)}


def remote_bytes(path: Path) -> dict:
    """A 30 s window read through the range reader (an in-memory store standing in for S3:
    the same requests an object store gets)."""
    from musiclime import storage
    from musiclime.av_decode import decode_window

    class Store:
        def __init__(self, data: bytes):
            self.data = data

        def size(self) -> int:
            return len(self.data)

        def read_at(self, n: int, offset: int) -> bytes:
            return self.data[offset : offset + n]

        def close(self) -> None:
            pass

    data = path.read_bytes()
    reader = storage.RangeReader(Store(data))
    d = decode_window(reader, 30.0)
    window = len(data) * 30.0 / (d.duration_s or 1)
    return {
        "file_bytes": len(data),
        "window_share_bytes": int(window),
        "bytes_read": reader.bytes_read,
        "requests": reader.requests,
        "read_over_window": reader.bytes_read / max(window, 1),
    }


def scan_rate(n_files: int) -> dict:
    """Folder scan speed and the Python heap's peak while streaming its rows."""
    import tracemalloc

    from pipeline.catalogue import CatalogueReader

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for i in range(n_files):
            folder = root / f"Artist {i // 200}" / f"Album {i // 20}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i % 20:02d} Song {i}.mp3").write_bytes(b"x")
            if i % 20 == 0:
                (folder / "cover.jpg").write_bytes(b"x")
        t0 = time.perf_counter()
        n = sum(1 for _ in CatalogueReader(str(root)).rows())
        seconds = time.perf_counter() - t0
        tracemalloc.start()
        sum(1 for _ in CatalogueReader(str(root)).rows())
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return {"files": n, "seconds": seconds, "files_per_s": n / seconds, "python_peak_mb": peak / 2**20}


def whole_track_rows(lengths: list[float]) -> list[dict]:
    """Seconds per track under --window whole, a 2 s clip model (tests/test_whole_track.py's),
    256 perturbations, against the track's windows."""
    from musiclime import MusicLIME
    from musiclime.factorization import AudioFactorization, LyricsFactorization
    from musiclime.whole_track import WholeTrack
    from tests.test_whole_track import LoudWindow

    rows = []
    for seconds in [lengths[0], *lengths]:  # the first is a warm-up
        x = np.random.default_rng(0).normal(0, 0.05, int(seconds * 8000)).astype(np.float32)
        model = WholeTrack(LoudWindow(), 2.0, batch=64)
        af = AudioFactorization(x[None], 8000, 10, ("mix",))
        t0 = time.perf_counter()
        MusicLIME(num_samples=256, seed=0).explain(model, af, LyricsFactorization("a b c"), labels=[1])
        rows.append(
            {"track_s": seconds, "windows": model.windows(af.explained_length), "seconds": time.perf_counter() - t0}
        )
    return rows[1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--scan-files", type=int, default=100000)
    args = ap.parse_args()
    x = music(args.minutes * 60)
    formats = {}
    with tempfile.TemporaryDirectory() as d:
        import soundfile as sf

        wav = Path(d) / "ref.wav"
        sf.write(wav, x, SR)
        formats["wav (soundfile, before)"] = {**decode_row(wav, "soundfile"), **remote_bytes(wav), "kind": "wav"}
        formats["wav (pyav, the same file)"] = {**decode_row(wav, "av"), **remote_bytes(wav), "kind": "wav"}
        for kind in ("wav", "flac", "aac", "alac", "mp3", "mp3vbr", "opus", "vorbis", "aiff"):
            path = encode(Path(d) / f"x{SUFFIX[kind]}", x, SR, kind)
            formats[kind] = {
                **decode_row(path, "av"),
                **remote_bytes(path),
                "kind": kind,
                "codec": FORMATS.get(kind, ("libvorbis",))[0],
            }
            print(kind, formats[kind], flush=True)
    base = formats["wav (soundfile, before)"]["seconds"]
    for v in formats.values():
        v["vs_wav_before"] = v["seconds"] / base
    result = {
        "when": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "file_minutes": args.minutes,
        "window_s": 30.0,
        "formats": formats,
        "scan": scan_rate(args.scan_files),
        "whole_track": whole_track_rows([10.0, 60.0, 240.0]),
    }
    print(result["scan"], result["whole_track"])
    write_result("decode", result)


if __name__ == "__main__":
    main()
