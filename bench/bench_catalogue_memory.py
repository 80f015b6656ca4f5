"""Peak memory of the driver's catalogue path at 10k, 100k and 1M rows: the batched read,
the duplicate check and the committed-row filter against a pre-filled output (half the
rows committed), then the stream of rows still to do. Inline lyrics (~60 words a row),
1% repeated track ids, Parquet row groups of 10k rows at every size (a row group is read
whole, so its size sets a floor of its own). Each size runs in its own process; the peak is
the process's VmHWM.

    python bench/bench_catalogue_memory.py [--rows 10000 100000 1000000]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_result  # noqa: E402

WORDS = ("night storm river light heart fire rain road home dream gold blue wind stone sea cold "
         "summer dance city love").split()


def make(root: Path, rows: int) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from schemas.tables import TRACKS
    rng = np.random.default_rng(0)
    cat = root / "catalogue.parquet"
    writer = None
    chunk = 10_000
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        ids = [f"track-{i:09d}" for i in range(start, start + n)]
        for j in rng.choice(n, size=n // 100, replace=False):  # 1% repeat an earlier id
            ids[j] = f"track-{max(0, start + j - 7):09d}"
        lyr = [" ".join(rng.choice(WORDS, 60)) for _ in range(n)]
        t = pa.table({"track_id": ids, "lyrics": lyr, "audio_path": [f"audio/{i}.flac" for i in ids]})
        writer = writer or pq.ParquetWriter(cat, t.schema, compression="zstd")
        writer.write_table(t, row_group_size=chunk)
    writer.close()
    part = root / "out" / "tracks" / "run_id=r"
    part.mkdir(parents=True)
    done = [f"track-{i:09d}" for i in range(0, rows, 2)]  # every other track is committed
    for k in range(0, len(done), 4096):
        ids = done[k:k + 4096]
        tr = {f.name: [None] * len(ids) for f in TRACKS}
        tr.update(track_id=ids, catalogue_row=list(range(len(ids))), seed=[0] * len(ids), predicted=["a"] * len(ids),
                  probabilities=[[1.0]] * len(ids), explained_labels=[["a"]] * len(ids), status=["ok"] * len(ids))
        pq.write_table(pa.Table.from_pydict(tr, schema=TRACKS), part / f"part-{k:09d}.parquet")
    return cat


def child(cat: str, out: str) -> None:
    from musiclime.records import ErrorRecord
    from pipeline.catalogue import CatalogueReader
    from pipeline.worklist import make_worklist, rows_to_do
    from pipeline.writer import RunWriter
    def rss() -> float:
        # VmHWM belongs to this address space; ru_maxrss would carry the parent's peak across exec
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc/self/status")
    base = rss()
    t0 = time.perf_counter()
    reader = CatalogueReader(cat)
    plan = make_worklist(reader, RunWriter(out, "r", "bench"))
    t_plan = time.perf_counter() - t0
    todo = errors = 0
    for item in rows_to_do(reader, plan):
        if isinstance(item, ErrorRecord):
            errors += 1
        else:
            todo += 1
    print(json.dumps({"rows": plan.n_rows, "committed": plan.n_done, "to_do": todo, "error_rows": errors,
                      "plan_s": round(t_plan, 2), "total_s": round(time.perf_counter() - t0, 2),
                      "import_peak_rss_mb": round(base, 1), "peak_rss_mb": round(rss(), 1)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--child", nargs=2)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    results = []
    for n in args.rows:
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            cat = make(Path(d), n)
            made = time.perf_counter() - t0
            r = subprocess.run([sys.executable, __file__, "--child", str(cat), str(Path(d) / "out")],
                               capture_output=True, text=True, check=True)
            res = json.loads(r.stdout.strip().splitlines()[-1])
            res["catalogue_mb"] = round(cat.stat().st_size / 2 ** 20, 1)
            res["make_s"] = round(made, 1)
            print(json.dumps(res), flush=True)
            results.append(res)
    growth = results[-1]["peak_rss_mb"] - results[0]["peak_rss_mb"]
    write_result("catalogue_memory", {"sizes": results, "peak_growth_mb": round(growth, 1),
                                      "goal": "peak RSS at the largest size within 100 MB of the smallest"})
    print(f"peak RSS growth {results[0]['rows']} -> {results[-1]['rows']} rows: {growth:.1f} MB")


if __name__ == "__main__":
    main()
