"""Night 2 against night 1 of an incremental standing output.

Night 1 explains N demo tracks (``--incremental``, a fresh output). Night 2 runs on the same
catalogue plus 5% new tracks, with 1% of the old tracks' audio re-encoded (new bytes, new
modification time). Both nights run the same CLI on a local Ray, one after the other in one
process tree, same model (the planted test model), same settings.

Reported per night: model work (rows the model evaluated, summed from ``tracks.model_rows``),
tracks explained, input bytes read (the catalogue plus the audio, stem and lyrics files of
every track the night decoded: what the decode stage reads; the unchanged tracks' files
are only stat'ed), and wall time of the whole command (Ray start included).

    python bench/bench_incremental.py [--tracks 400]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_result  # noqa: E402

PATHS = ("audio_path", "lyrics_path", "vocals_path", "drums_path", "bass_path", "other_path")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tracks", type=int, default=400)
    ap.add_argument("--num-samples", type=int, default=1000)
    args = ap.parse_args(argv)
    import numpy as np
    import polars as pl
    import pyarrow.parquet as pq
    import soundfile as sf

    from musiclime.library import make_library
    from pipeline import output
    work = Path(tempfile.mkdtemp(prefix="musiclime-nights-"))
    (work / "mlplugins.py").write_text((Path(__file__).resolve().parents[1] / "tests" / "plugins.py").read_text())
    n_new, n_changed = round(args.tracks * 0.05), round(args.tracks * 0.01)
    lib = work / "lib"
    make_library(lib, args.tracks + n_new, seed=0, seconds=3.0)
    full = pq.read_table(lib / "catalogue.parquet")
    pq.write_table(full.slice(0, args.tracks), lib / "night1.parquet")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=os.pathsep.join([str(work), os.environ.get("PYTHONPATH", "")]))
    out = work / "out"
    musiclime = str(Path(sys.executable).parent / "musiclime")

    def night(catalogue: str, run_id: str) -> dict:
        t0 = time.perf_counter()
        r = subprocess.run([musiclime, "explain", str(lib / catalogue), "--model", "mlplugins:make",
                            "--separator", "provided", "--out", str(out), "--num-samples", str(args.num_samples),
                            "--run-id", run_id, "--incremental", "--no-progress", "--predictors", "2"],
                           env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(r.stdout[-3000:] + r.stderr[-3000:])
        tracks = output.frame(str(out), "tracks", ["track_id", "model_rows"], [run_id])
        errors = output.frame(str(out), "errors", ["track_id"], [run_id])
        decoded = set(tracks["track_id"]) | set(errors["track_id"])
        cat = pq.read_table(lib / catalogue).to_pylist()
        read = (lib / catalogue).stat().st_size + sum(
            (lib / row[c]).stat().st_size for row in cat if row["track_id"] in decoded for c in PATHS if row.get(c))
        return {"catalogue_rows": len(cat), "explained": tracks.height, "errors": errors.height,
                "model_rows": int(tracks["model_rows"].sum() or 0), "bytes_read": int(read), "seconds": seconds,
                "stdout": r.stdout.strip().splitlines()[0]}

    first = night("night1.parquet", "night-1")
    rng = np.random.default_rng(0)
    changed = sorted(rng.choice(args.tracks, n_changed, replace=False).tolist())
    for i in changed:  # re-encoded: slightly quieter, so new bytes and a new mtime
        path = lib / full.column("audio_path")[i].as_py()
        x, sr = sf.read(path, dtype="float32")
        sf.write(path, 0.9 * x, sr)
    second = night("catalogue.parquet", "night-2")
    sel = output.latest_selection(str(out))[1]
    from_night2 = sel.filter(pl.col("run_id") == "night-2").height
    result = {"tracks": args.tracks, "new": n_new, "changed": n_changed, "num_samples": args.num_samples,
              "night1": first, "night2": second,
              "model_work_ratio": second["model_rows"] / first["model_rows"],
              "explained_ratio": second["explained"] / first["explained"],
              "bytes_read_ratio": second["bytes_read"] / first["bytes_read"],
              "wall_time_ratio": second["seconds"] / first["seconds"],
              "latest_selection_tracks": sel.height, "latest_from_night2": from_night2}
    print({k: v for k, v in result.items() if k not in ("night1", "night2")})
    print("wrote", write_result("incremental", result))
    return result


if __name__ == "__main__":
    main()
