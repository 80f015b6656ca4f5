"""Are two explain outputs the same? Every table's rows compared cell by cell (floats bit
for bit), except the columns that name an invocation or time it, plus the config hashes.

    python bench/compare_outputs.py OUT_BEFORE OUT_AFTER

Used to show that a refactor changed no behaviour: run ``musiclime demo --out A`` on the
old commit and ``--out B`` on the new one, then compare. Exit 0 when equal, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

IGNORED = {"invocation_id", "timings", "updated", "started"}
# global_importance sums weights batch by batch as committed; where a commit falls depends on
# the clock (commit cadence), so its floats may differ in the last bits between two runs of
# the same code: compared to this tolerance, and the largest difference printed.
AGGREGATE_TOL = 1e-12
TABLES = ("tracks", "explanations", "errors", "members", "global_importance")


def table(out: Path, name: str):
    import polars as pl
    files = sorted((out / name).rglob("*.parquet"))
    if not files:
        return None
    frames = []
    for f in files:
        df = pl.read_parquet(f)
        run = next((p.split("=", 1)[1] for p in f.relative_to(out / name).parts if p.startswith("run_id=")), None)
        frames.append(df.with_columns(pl.lit(run).alias("run_id")) if run and "run_id" not in df.columns else df)
    df = pl.concat(frames, how="diagonal_relaxed")
    keep = [c for c in df.columns if c not in IGNORED]
    return df.select(keep).sort(keep, nulls_last=True)


def _float_difference(ta, tb) -> float | None:
    """The largest absolute difference of float columns, or None when other columns differ."""
    import polars as pl
    floats = [c for c in ta.columns if ta[c].dtype in (pl.Float32, pl.Float64)]
    others = [c for c in ta.columns if c not in floats]
    ta, tb = ta.sort(others, nulls_last=True), tb.sort(others, nulls_last=True)
    if ta.height != tb.height or not ta.select(others).equals(tb.select(others)):
        return None
    return max(float((ta[c] - tb[c]).abs().max() or 0.0) for c in floats) if floats else 0.0


def compare(a: Path, b: Path) -> list[str]:
    problems = []
    for name in TABLES:
        ta, tb = table(a, name), table(b, name)
        if ta is None and tb is None:
            continue
        if ta is None or tb is None:
            problems.append(f"{name}: present in only one output")
            continue
        if ta.columns != tb.columns:
            problems.append(f"{name}: columns differ: {ta.columns} vs {tb.columns}")
        elif name == "global_importance" and not ta.equals(tb):
            worst = _float_difference(ta, tb)
            if worst is None or worst > AGGREGATE_TOL:
                problems.append(f"{name}: rows differ (largest float difference {worst})")
            else:
                print(f"{name}: {ta.height} rows equal, floats within {worst:.1e} (commit batches' sum order)")
        elif not ta.equals(tb):
            problems.append(f"{name}: rows differ ({ta.height} vs {tb.height} rows)")
        else:
            print(f"{name}: {ta.height} rows x {len(ta.columns)} columns identical")
    ra, rb = (json.loads((d / "run.json").read_text()) for d in (a, b))
    for k in ("config_hash", "settings", "model_id", "classes", "catalogue_hash", "rows", "status"):
        if ra.get(k) != rb.get(k):
            problems.append(f"run.json {k}: {ra.get(k)!r} vs {rb.get(k)!r}")
    print(f"config hash: {ra.get('config_hash')} / {rb.get('config_hash')}")
    return problems


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    args = p.parse_args()
    problems = compare(args.before, args.after)
    for line in problems:
        print("DIFFERENT:", line)
    print("identical" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
