"""A night under chaos, larger than the suite's test: a `ray start` cluster on 127.0.0.1 (a
driver-only head, one node with 2 logical GPUs), `musiclime explain --address auto` over a
few hundred tracks with a SIGKILL every ~20 s of a busy GPU-stage actor or a CPU worker
(running a decode or a fit, or idle), then the same catalogue on a clean run. Reports the kills, both wall times, and checks every
row once, no error rows, identical weights.

    python bench/bench_chaos.py [--tracks 300] [--every 20]
Results in bench/results/chaos.json (and the docs/benchmarks.md table via bench/update_readme.py).
"""
from __future__ import annotations

import argparse
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_result  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tracks", type=int, default=300)
    ap.add_argument("--every", type=float, default=20.0, help="seconds between kills")
    ap.add_argument("--num-samples", type=int, default=1000)
    args = ap.parse_args(argv)
    import duckdb

    from musiclime.library import make_library
    from tests.test_multinode import MUSICLIME, Cluster, _workers
    work = Path(tempfile.mkdtemp(prefix="musiclime-chaos-"))
    (work / "mlplugins.py").write_text((Path(__file__).resolve().parents[1] / "tests" / "plugins.py").read_text())
    make_library(work / "lib", args.tracks, seed=0, seconds=3.0)
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16),
               PYTHONPATH=os.pathsep.join([str(work), os.environ.get("PYTHONPATH", "")]))
    cluster = Cluster(env)
    cluster.head()
    env["RAY_ADDRESS"] = cluster.address
    cluster.start("gpu-node", "--address", cluster.address, "--num-cpus", "4", "--num-gpus", "2")
    cluster.wait_gpus(2)
    out = work / "out"

    def cmd(run_id: str, predictors: int) -> list[str]:
        return [MUSICLIME, "explain", str(work / "lib" / "catalogue.parquet"), "--model", "mlplugins:make",
                "--separator", "provided", "--out", str(out), "--num-samples", str(args.num_samples),
                "--run-id", run_id, "--commit-every", "8", "--no-progress", "--address", "auto",
                "--predictors", str(predictors), "--gpus-per-predictor", "1"]
    rng = random.Random(0)
    kills: list[str] = []
    try:
        t0 = time.perf_counter()
        log = open(work / "chaos.log", "w")
        run = subprocess.Popen(cmd("chaos", 2), env=env, stdout=log, stderr=subprocess.STDOUT)
        next_kill = time.monotonic() + args.every
        while run.poll() is None:
            time.sleep(0.2)
            if time.monotonic() < next_kill:
                continue
            kind = "cpu" if rng.random() < 0.25 else "PredictorActor"
            if kind == "PredictorActor":  # a busy one
                pids = [p for p in _workers(kind)
                        if "predict" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
            else:  # a CPU worker: running a fit or a decode, or idle and next in line
                pids = _workers("fit", cluster) or _workers("decode", cluster) or _workers("IDLE", cluster)
            if pids:
                os.kill(rng.choice(pids), 9)
                kills.append(kind)
                next_kill = time.monotonic() + args.every
        chaos_s, chaos_rc = time.perf_counter() - t0, run.returncode
        t1 = time.perf_counter()
        clean = subprocess.run(cmd("clean", 2), env=env, capture_output=True, text=True)
        clean_rc = clean.returncode
        if chaos_rc or clean_rc:
            print((work / "chaos.log").read_text()[-3000:], clean.stdout[-2000:], clean.stderr[-3000:])
        clean_s = time.perf_counter() - t1
    finally:
        cluster.stop()
    scan = f"read_parquet('{out}/tracks/**/*.parquet', hive_partitioning=true)"
    exp = f"read_parquet('{out}/explanations/**/*.parquet', hive_partitioning=true)"
    con = duckdb.connect()
    once = con.execute(f"select count(*), count(distinct track_id) from {scan} where run_id='chaos'").fetchone()
    errors = len(list((out / "errors").rglob("*.parquet"))) if (out / "errors").exists() else 0
    q = f"select track_id, label, feature, weight from {exp} where run_id='{{}}' order by 1, 2, 3"
    same = con.execute(q.format("chaos")).fetchall() == con.execute(q.format("clean")).fetchall()
    result = {"tracks": args.tracks, "kill_every_s": args.every, "num_samples": args.num_samples,
              "kills": len(kills), "kills_by_kind": {k: kills.count(k) for k in sorted(set(kills))},
              "chaos_exit_code": chaos_rc, "clean_exit_code": clean_rc, "chaos_seconds": chaos_s,
              "clean_seconds": clean_s, "slowdown": chaos_s / clean_s, "rows": once[0], "distinct_tracks": once[1],
              "error_files": errors, "weights_identical": same}
    print(result)
    print("wrote", write_result("chaos", result))
    return result


if __name__ == "__main__":
    main()
