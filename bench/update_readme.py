"""Rewrite the README's benchmark tables from bench/results/*.json.

Sections between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` are replaced; a result
that does not exist leaves its section as it is.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def _load(name):
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.is_file() else None


def core(r) -> str:
    s, lim, sp = r["seconds_per_track"], r["limit_ratio"], r["speedup_vs_reference"]
    rows = [("reference loop (batch 10, numpy re-sum per mask)", "reference_loop", 1.0),
            ("ours, `predict_proba` only", "ours_plain", sp["ours_plain"]),
            ("ours, late-fusion protocol", "ours_late_fusion", sp["ours_late_fusion"])]
    out = ["| | s/track | fraction of the limit | vs reference loop |", "|---|---|---|---|"]
    out += [f"| {label} | {s[k]:.2f} | {lim[k]:.2f} | {x:.2f}x |" for label, k, x in rows]
    lm = r["limit"]
    out.append("")
    out.append(f"Limit: {lm['rows_per_s']:.0f} rows/s at batch {lm['best_batch']} "
               f"({', '.join(f'{b}: {v:.0f}' for b, v in lm['per_batch_rows_per_s'].items())}); "
               f"measured {r['when']} on {r['machine']['cpus']} CPUs.")
    return "\n".join(out)


def separation(r) -> str:
    out = ["| stem | SDR median (dB) | SDR mean (dB) |", "|---|---|---|"]
    out += [f"| {s} | {v['median']:+.1f} | {v['mean']:+.1f} |" for s, v in r["sdr_db"].items()]
    out.append("")
    out.append(f"`hpss` on {r['tracks']} demo tracks against their true stems (`python bench/bench_separation.py`); "
               f"the stems sum back to the mix within {r['mix_reconstruction_max_rel_error']:.1e} of full scale, "
               f"{r['seconds_per_10s_track']:.2f} s per 10 s track.")
    return "\n".join(out)


def memory(r) -> str:
    out = ["| tracks | driver peak RSS (MB) | predictor peak RSS (MB) | seconds |", "|---|---|---|---|"]
    out += [f"| {x['tracks']} | {x['driver_peak_rss_mb']:.0f} | {x['predictor_peak_rss_mb']:.0f} | {x['seconds']:.0f} |"
            for x in r["runs"]]
    return "\n".join(out)


def aggregate_memory(r) -> str:
    out = ["| explanation rows | peak RSS (MB) | seconds |", "|---|---|---|"]
    out += [f"| {x['rows']:,} | {x['peak_rss_mb']:.0f} | {x['seconds']:.1f} |" for x in r["runs"]]
    return "\n".join(out)


SECTIONS = {"core": ("core", core), "separation": ("separation", separation),
            "pipeline_memory": ("pipeline_memory", memory), "aggregate_memory": ("aggregate_memory", aggregate_memory)}


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    for section, (name, fmt) in SECTIONS.items():
        r = _load(name)
        if r is None:
            continue
        pat = re.compile(rf"(<!-- bench:{section} -->\n).*?(\n<!-- /bench:{section} -->)", re.S)
        text = pat.sub(lambda m: m.group(1) + fmt(r) + m.group(2), text)
    readme.write_text(text)
    print("README tables updated from", RESULTS)


if __name__ == "__main__":
    main()
