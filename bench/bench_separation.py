"""SDR of the pure-DSP ``hpss`` stems against the demo library's true stems, per stem.

    python bench/bench_separation.py [--tracks 40]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_result  # noqa: E402
from musiclime.library import STEMS, synthesize, track_specs  # noqa: E402
from musiclime.separation import HPSSSeparator  # noqa: E402


def sdr(ref: np.ndarray, est: np.ndarray) -> float:
    """Signal-to-distortion ratio in dB (plain SDR, no scale or filter allowance)."""
    return float(10 * np.log10((ref ** 2).sum() / max(((ref - est) ** 2).sum(), 1e-12) + 1e-12))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tracks", type=int, default=40)
    ap.add_argument("--sample-rate", type=int, default=16000)
    args = ap.parse_args(argv)
    sep = HPSSSeparator()
    per_stem = {s: [] for s in STEMS}
    recon, secs = [], []
    for spec in track_specs(args.tracks, 0):
        true = synthesize(spec, args.sample_rate, 10.0)
        mix = true.sum(0)
        t0 = time.perf_counter()
        est = sep.separate(mix, args.sample_rate).numpy()
        secs.append(time.perf_counter() - t0)
        recon.append(float(np.abs(est.sum(0) - mix).max() / np.abs(mix).max()))
        for i, s in enumerate(STEMS):
            per_stem[s].append(sdr(true[i], est[i]))
    result = {"tracks": args.tracks, "separator": sep.cache_params(),
              "sdr_db": {s: {"median": statistics.median(v), "mean": statistics.mean(v)} for s, v in per_stem.items()},
              "mix_reconstruction_max_rel_error": max(recon), "seconds_per_10s_track": statistics.mean(secs)}
    path = write_result("separation", result)
    for s, v in result["sdr_db"].items():
        print(f"{s:7s} SDR median {v['median']:+.1f} dB, mean {v['mean']:+.1f} dB")
    print(f"mix reconstruction: max relative error {max(recon):.2e}; {statistics.mean(secs):.2f} s per 10 s track")
    print("wrote", path)
    return result


if __name__ == "__main__":
    main()
