"""Rewrite the benchmark tables of docs/benchmarks.md (and any page with a bench marker) from
bench/results/*.json.

Sections between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` are replaced; a result
that does not exist leaves its section as it is.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.tables_presets import levers, musicnn_presets, presets, stage_presets, table  # noqa: E402

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


def scale(r) -> str:
    out = table(["workers", "tracks", "seconds", "tracks/h", "driver peak RSS (MB)", "predictor peak RSS (MB)",
                 "predictor private / object-store RSS at the end (MB)"],
                [[x["workers"], x["tracks"], f"{x['seconds']:.0f}", f"{x['tracks_per_hour']:,.0f}",
                  f"{x['driver_peak_rss_mb']:.0f}", f"{x['predictor_peak_rss_mb']:.0f}",
                  f"{x['predictor_rss_anon_mb']:.0f} / {x['predictor_rss_shmem_mb']:.0f}"
                  if "predictor_rss_anon_mb" in x else "–"]
                 for x in sorted(r["runs"], key=lambda x: (x["workers"], x["tracks"]))])
    out.append("")
    out.append("; ".join(f"{w} worker(s): {v['marginal_seconds_per_track']:.3f} s per extra track, memory x"
                         f"{v['driver_growth']:.2f} (driver) / x{v['predictor_growth']:.2f} (predictor)"
                         for w, v in r["per_workers"].items())
               + (f"; 2 workers vs 1 on the largest catalogue: {r['workers_speedup_largest']:.2f}x"
                  if "workers_speedup_largest" in r else "") + ".")
    out.append("")
    out += [f"![{p}](../bench/results/{p})" for p in r.get("plots", [])]  # the tables live in docs/
    lay = r.get("stage_layout")
    if lay:
        out += ["", f"Where demucs runs, per track ({lay['tracks']} tracks of {lay['track_seconds']:g} s, "
                    f"{lay['num_samples']} samples; bytes each stage hands to the next, i.e. what the object "
                    f"store holds and moves; median seconds per stage on this machine's CPU, small random-init "
                    f"demucs):", ""]
        rows = []
        for name, label in (("gpu_stage", "in the GPU stage (the job)"), ("separate_actor", "a separate actor")):
            x = lay[name]
            hops = ", ".join(f"{k.replace('_', ' ')} {v / 1024:.0f} KiB" for k, v in x["bytes_per_hop"].items())
            secs = ", ".join(f"{k} {v:.3f}" for k, v in x["seconds_per_stage"].items())
            rows.append([label, f"{x['bytes_per_track'] / 1024:.0f} KiB", hops, secs])
        out += table(["separation", "bytes per track", "per hop", "seconds per stage"], rows)
        out += ["", f"A separate separator actor moves {lay['bytes_ratio_separate_actor_vs_gpu_stage']:.1f}x the "
                    "bytes per track: the four stems travel from it to the predictor (another node, often); in "
                    "the GPU stage only the mix goes in and probabilities come out."]
    return "\n".join(out)


def aggregate_memory(r) -> str:
    out = table(["explanation rows", "peak RSS (MB)", "seconds"],
                [[f"{x['rows']:,}", f"{x['peak_rss_mb']:.0f}", f"{x['seconds']:.1f}"] for x in r["runs"]])
    return "\n".join(out)


def catalogue_memory(r) -> str:
    out = table(["catalogue rows", "committed", "to do", "error rows", "peak RSS (MB)", "plan s", "total s"],
                [[f"{x['rows']:,}", f"{x['committed']:,}", f"{x['to_do']:,}", f"{x['error_rows']:,}",
                  f"{x['peak_rss_mb']:.0f}", f"{x['plan_s']:.1f}", f"{x['total_s']:.1f}"] for x in r["sizes"]])
    out.append("")
    out.append(f"Peak growth from {r['sizes'][0]['rows']:,} to {r['sizes'][-1]['rows']:,} rows: "
               f"{r['peak_growth_mb']:.0f} MB (goal: within 100 MB); measured {r['when']} on {r['machine']['cpus']} CPUs.")
    return "\n".join(out)


def gpu(r) -> str:
    v = r["variants"]
    rows = [["reference loop (batch 10, numpy re-sum per mask)", r["num_samples"], 2 * r["num_samples"],
             f"{r['reference_s']:.2f}", f"{r['reference_limit_ratio']:.2f}", "1.00x"]]
    names = {"ours": "ours, i.i.d. (batch 256, compose on the GPU)",
             "ours_predict_proba_only": "ours, i.i.d., `predict_proba` only",
             "ours_grid_250x250": "ours, grid 250 x 250",
             "ours_grid_256x256_4096rows": "ours, grid 256 x 256 (4,096 samples)"}
    rows += [[names.get(k, k), x["num_samples"], x["encoder_passes"], f"{x['seconds']:.2f}",
              f"{x['limit_ratio']:.2f}", f"{x['speedup_vs_reference']:.2f}x"] for k, x in v.items()]
    out = table(["", "samples", "encoder passes", "s/track", "samples/s / limit", "vs reference"], rows)
    out.append("")
    out.append(f"{r['gpu']}; {r['model']}; limit {r['limit_rows_per_s']:.0f} rows/s at batch {r['best_batch']} "
               f"(batch 10: {r['limit_per_batch']['10']:.0f}); peak GPU memory {r['peak_gpu_mem_gb']:.1f} GB.")
    return "\n".join(out)


def sampling(r) -> str:
    out = []
    if r.get("target", "probability") != "probability":
        out += [f"Target: {r['target']} for every row and for the reference; the `iid 1000` row is the "
                f"paper's sampling with that target.", ""]
    f = lambda v, d=2: "–" if v is None else f"{v:.{d}f}"  # noqa: E731
    for task, t in r["tasks"].items():
        for view, v in t.items():
            base = v["summary"].get("iid 1000 (paper)")
            kind = "late fusion: audio + text encoder rows" if view == "late_fusion" else "predict_proba only: full model rows"
            rows = []
            for name, x in v["summary"].items():
                meets = ""
                if base and name != "iid 1000 (paper)" and x.get("jaccard_to_ref") is not None:
                    goal = 10 if view == "late_fusion" else 4
                    ok = (x["work_ratio"] >= goal and x["jaccard_to_ref"] >= base["jaccard_to_ref"]
                          and x["aopc"] >= base["aopc"])
                    meets = "yes" if ok else "no"
                rows.append([name, f"{x['audio_rows']:.0f} / {x['text_rows']:.0f}" if view == "late_fusion"
                             else f"{x['model_rows']:.0f}", f(x.get("work_ratio"), 1) + "x",
                             f(x["seconds"], 1), f(x["jaccard_to_ref"]), f(x["aopc"], 3),
                             f(x["stability_median"]) + " / " + f(x["stability_p10"]) + f" ({x['stability_tracks']})",
                             f(x["topk_resolved"]), meets])
            out.append(f"**{task}, {kind}** ({r['ref_tracks']} tracks with a {r['ref_samples']:,}-sample reference; "
                       f"stability over the tracks in brackets, {r['seeds']} seeds; others {r['baseline_seeds']} seeds):")
            out.append("")
            out += table(["setting", "audio / text rows" if view == "late_fusion" else "model rows", "less work",
                          "s/track", "top-10 Jaccard to 16k", "deletion AOPC", "across seeds: median / p10",
                          "top-10 resolved", "goal met"], rows)
            out.append("")
    return "\n".join(out).rstrip()


def target(r) -> str:
    rows = []
    for task, t in r["tasks"].items():
        for name in ("probability", "log_odds"):
            x = t[name]
            rows.append([task, name, f"{t['mean_top_probability']:.5f}", f"{x['r2_mean']:.2f}",
                         f"{x['jaccard_across_seeds']:.2f}", f"{x['aopc']:.3f}",
                         " / ".join("–" if x[k] is None else f"{x[k]:.2f}" for k in
                                    ("planted_precision_overall", "planted_precision_audio", "planted_precision_lyrics"))])
    out = table(["task", "target", "mean top probability", "surrogate R^2", "top-10 Jaccard across seeds",
                 "deletion AOPC", "planted precision@5 overall / audio / words"], rows)
    out.append("")
    out.append(f"{r['tracks']} held-out tracks, {r['seeds']} seeds, {r['samples']} samples ({r['design']}), the demo "
               f"model as trained (T=1) and sharpened with temperature T (`python bench/bench_target.py`, "
               f"measured {r['when']}).")
    return "\n".join(out)


def precision(r) -> str:
    f = lambda v, d=2: "–" if v is None else f"{v:,.{d}f}"  # noqa: E731
    rows, notes = [], []
    for task, t in r["tasks"].items():
        for d in t["designs"].values():
            view = "late fusion" if d["view"] == "late_fusion" else "predict_proba"
            rows.append([task, f"{d['name']} ({view})", f(d["work_ratio"], 1) + "x", f(d["jaccard_to_ref"]),
                         f(d["real_iid_equivalent_n"], 0), f(d["work_ratio_at_paper_jaccard"], 1) + "x",
                         f(d["work_ratio_at_stability_goal"], 1) + "x"])
        need = t["n_for_goal"]
        notes.append(f"{task}: the stability goal needs the precision of {f(t['real_n_star'], 0)} i.i.d. samples "
                     f"(median >= {r['goal']['stability_median']} at {f(need['stability_median'] / t['anchor'], 0)}, "
                     f"10th percentile >= {r['goal']['stability_p10']} at {f(need['stability_p10'] / t['anchor'], 0)}); "
                     f"the model counts the paper's 1,000 samples as {f(t['anchor'] * r['base_n'], 0)}, and "
                     f"so puts their stability at {f(t['paper_modelled']['stability_median'])} / "
                     f"{f(t['paper_modelled']['stability_p10'])} (measured: "
                     f"{f(t['designs']['late_fusion: iid 1000 (paper)']['stability_median'])} median).")
    out = table(["task", "setting", "less work (measured)", "top-10 Jaccard to 16k (measured)",
                 "worth i.i.d. samples", "less work at the paper's Jaccard", "less work at the stability goal"], rows)
    out += [""] + [f"- {n}" for n in notes] + ["", f"{r['tracks']} tracks with a {r['ref_n']:,}-sample reference a task, "
                                                   f"{r['reps']} simulated sets of {r['seeds']} seeds per track and N, target "
                                                   f"{r['target']} (`python bench/bench_precision.py`, measured {r['when']})."]
    return "\n".join(out)


def quality(r) -> str:
    rows = []
    for task, t in r["tasks"].items():
        p, u = t["precision_at_5"], t.get("unimodal_vs_multimodal", {})
        st = t["top10_jaccard_across_seeds"]
        rows.append([task, " / ".join(f"{p[k]:.2f}" if k in p else "–" for k in ("stem", "segment", "audio", "lyrics")),
                     f"{t['deletion_aopc']['explanation_order']:.3f} vs {t['deletion_aopc']['random_order']:.3f}",
                     ", ".join(f"{n}: {v:.2f}" for n, v in st.items()),
                     f"{u['top10_audio_jaccard']:.2f} / {u['audio_weight_spearman']:.2f}" if u else "–"])
    out = table(["task", "precision@k stem / segment / stem×segment / words", "deletion AOPC (ours vs random)",
                 "top-10 Jaccard across seeds", "audio-only vs joint: top-10 Jaccard / Spearman"], rows)
    return "\n".join(out)


def chaos(r) -> str:
    kinds = ", ".join(f"{n} {k}" for k, n in r["kills_by_kind"].items())
    out = table(["tracks", f"SIGKILLs (every ~{r['kill_every_s']:g} s)", "chaos run (s)", "clean run (s)",
                 "rows / distinct tracks", "error rows", "weights identical", "exit codes"],
                [[r["tracks"], f"{r['kills']} ({kinds})", f"{r['chaos_seconds']:.0f}", f"{r['clean_seconds']:.0f}",
                  f"{r['rows']} / {r['distinct_tracks']}", r["error_files"], "yes" if r["weights_identical"] else "NO",
                  f"{r['chaos_exit_code']} / {r['clean_exit_code']}"]])
    return "\n".join(out)


def gpu_stage(r) -> str:
    fp32 = _load("gpu_stage_fp32")
    rows = []
    for name, label in (("provided_stems", "provided stems"), ("demucs_in_stage", "demucs separating in the stage")):
        x = r["runs"][name]
        rows.append([label, r["precision"], f"{x['tracks_per_gpu_hour']:,.0f}", f"{x['s_per_track']:.2f}",
                     f"{x['separate_s_per_track']:.2f}", f"{x['limit_ratio']:.2f}", f"{x['peak_gpu_mem_gb']:.1f}"])
    if fp32:
        for name, label in (("provided_stems", "provided stems"), ("demucs_in_stage", "demucs separating in the stage")):
            x = fp32["runs"][name]
            rows.append([label, "fp32", f"{x['tracks_per_gpu_hour']:,.0f}", f"{x['s_per_track']:.2f}",
                         f"{x['separate_s_per_track']:.2f}", f"{x['limit_ratio']:.2f}", f"{x['peak_gpu_mem_gb']:.1f}"])
    out = table(["", "precision", "tracks / GPU-hour", "s/track", "of which separating", "masks/s / bare forward limit",
                 "peak GPU memory (GB)"], rows)
    out.append("")
    out.append(f"{r['device']}; {r['model']}; {r['runs']['provided_stems']['tracks']} tracks of "
               f"{r['seconds_per_track']:.0f} s, {r['num_samples']} samples each (i.i.d., "
               f"{r['runs']['provided_stems']['model_rows_per_track']:.0f} encoder passes per track). Bare forward "
               f"limit {r['limit_rows_per_s']:.0f} rows/s at batch {r['best_batch']} (auto precision)"
               + (f", {fp32['limit_rows_per_s']:.0f} in fp32 (the fp32 rows: {fp32['runs']['provided_stems']['tracks']} "
                  f"tracks, the same machine)" if fp32 else "")
               + f". The filterbank computed on the GPU differs from the Hugging Face extractor's by at most "
               f"{r['fbank_max_abs_diff']:.1e}. Measured {r['when']}.")
    return "\n".join(out)


def incremental(r) -> str:
    n1, n2 = r["night1"], r["night2"]
    rows = [[name, n["catalogue_rows"], n["explained"], f"{n['model_rows']:,}", f"{n['bytes_read'] / 1e6:.1f} MB",
             f"{n['seconds']:.0f}"] for name, n in (("night 1", n1), ("night 2", n2))]
    rows.append(["night 2 / night 1", "", f"{r['explained_ratio']:.3f}", f"{r['model_work_ratio']:.3f}",
                 f"{r['bytes_read_ratio']:.3f}", f"{r['wall_time_ratio']:.2f}"])
    out = table(["", "catalogue rows", "tracks explained", "model rows (work)", "input bytes read", "wall s"], rows)
    out.append("")
    out.append(f"{r['tracks']} demo tracks, then {r['new']} new and {r['changed']} with re-encoded audio "
               f"(`python bench/bench_incremental.py`, {r['num_samples']} samples, provided stems, local Ray, "
               f"measured {r['when']} on {r['machine']['cpus']} CPUs). The default aggregate after night 2 covers "
               f"{r['latest_selection_tracks']} tracks, {r['latest_from_night2']} of them explained that night.")
    return "\n".join(out)


def decode(r) -> str:
    rows = []
    for name, v in r["formats"].items():
        rows.append([name, f"{v['file_bytes'] / 2**20:.1f}", f"{v['seconds'] * 1000:.1f}", f"{v['vs_wav_before']:.1f}x",
                     f"{v['peak_mb']:.1f}", f"{v['bytes_read'] / 2**20:.2f}", v["requests"],
                     f"{v['read_over_window']:.1f}x"])
    out = table(["file", "MB", "ms per 30 s window", "vs WAV before", "peak MB (numpy)", "MB read remotely",
                 "requests", "read / window's share"], rows)
    sc, wt = r["scan"], r["whole_track"]
    out += ["", f"A {r['file_minutes']:g}-minute file, 16 kHz content, the middle {r['window_s']:g} s decoded "
            f"(`python bench/bench_decode.py`, {r['when']}, {r['machine']['cpus']} CPUs). Remote reads through the "
            "range reader (what S3 gets); MP3 is decoded from its start (no seek index), so it reads up to the "
            "window's end. Folder scan: "
            f"{sc['files']:,} files in {sc['seconds']:.1f} s ({sc['files_per_s']:,.0f} files/s), Python heap peak "
            f"{sc['python_peak_mb']:.0f} MB while streaming its rows.", "",
            "`--window whole`, a 2 s clip model, 256 perturbations (CPU):", ""]
    out += table(["track (s)", "windows", "seconds per track"],
                 [[f"{x['track_s']:g}", x["windows"], f"{x['seconds']:.2f}"] for x in wt])
    return "\n".join(out)


def musicnn(r) -> str:
    out = table(["setting", "tracks", "tag explanations", "valid (top stem makes the sound)", "by tag",
                 "s per track (1 core)", "tracks per core-hour"],
                [[{"default": "default (1,000 foldover, log-odds)", "paper": "`--quality paper` (1,000 i.i.d., probability)"}.get(
                    name, f"`--quality {name}`"),
                  v.get("tracks", "all"), v["explained"], f"{v['valid']} ({v['valid_share']:.0%})",
                  ", ".join(f"{t} {x['valid']}/{x['of']}" for t, x in v["by_tag"].items()),
                  f"{v['seconds_per_track']:.0f}", f"{v['tracks_per_core_hour']:.0f}"]
                 for name, v in r["settings"].items()])
    fails = [f for v in r["settings"].values() for f in v["failures"]][:6]
    out += ["", f"{r['tracks']} of {r.get('of_tracks', r['tracks'])} rendered {r['seconds']:g}-s excerpts "
            f"(`python bench/bench_musicnn.py`, {r['when']}, {r['machine']['cpus']} CPUs, one process per core); "
            f"{r['tracks_without_a_predicted_tag']} had no tag of their kind among their top {r['top']}. Failures, "
            "first few: " + ("; ".join(f"{f['track']} ({f['piece']}) {f['tag']}: top stem {f['top_stem']} "
                                      f"{f['shares']}" for f in fails) or "none") + "."]
    return "\n".join(out)


def serve(r) -> str:
    rows = []
    for fmt, v in r["formats"].items():
        rows.append([fmt, f"{v['rows']:,}", f"{v['output_gib']:.2f}", f"{v['explanation_files']:,}",
                     f"{v['index_build_s']:.0f} s, {v['index_build_peak_rss_mb']:,} MB", f"{v['index_mb']:.0f} MB",
                     f"{v['start_from_cache_s']:.1f} s", f"{v['p50_ms']:.0f} / {v['p95_ms']:.0f} / {v['p99_ms']:.0f}",
                     f"{v['throughput_rps']:.1f}", v["errors"],
                     f"{v.get('saturated_rps', float('nan')):.0f} (p95 {v.get('saturated_p95_ms', float('nan')):.0f} ms)",
                     f"{v['serving_peak_rss_mb']:,} MB"])
    out = table(["output", "rows (run, track)", "GiB", "explanation files", "index build (own process, peak)",
                 "index on disk", "start from the index", "p50 / p95 / p99 ms", "requests/s", "errors",
                 "requests/s, 4 clients back to back", "server peak memory"], rows)
    v = next(iter(r["formats"].values()))
    out += ["", f"{r['tracks']:,} tracks x 60 features over {r['nights']} nights (the first explains all, each "
            "later one re-explains 5%), files of 64 tracks as `explain` writes them "
            f"(`python bench/bench_serve.py`, {r.get('when', '')}, {r['machine']}). Load: {v['clients']} clients, "
            f"each waiting {v['think_s']:g} s between requests, for {v['seconds']:.0f} s; half searches (text, "
            "filters, sorts, pages), half track pages (without rendering audio)."]
    return "\n".join(out)


def listing(r) -> str:
    b, a = r["before"], r["after"]
    out = table(["planning", "requests", "seconds"],
                [["one HEAD per file (before)", f"{b['requests']:,}", f"{b['seconds']:.0f}"],
                 ["listings of the folders (after)", f"{a['requests']:,}", f"{a['seconds']:.0f}"],
                 ["before / after", f"{r['request_ratio']:.0f}x", f"{r['speedup']:.1f}x"]])
    out += ["", f"{r['tracks']:,} tracks, {r['files']:,} files (an audio and a lyrics file each) in folders of "
            f"{r['files_per_folder']} on the S3 test server (moto), planned in batches of {r['batch_rows']:,} rows "
            f"(`python bench/bench_listing.py`, {r['when']}, {r['machine']['cpus']} CPUs); requests counted by the "
            f"server's recorder; {a['lists']:,} LIST and {a['heads']:,} HEAD requests after; every content key equal. "
            "The test server answers each LIST by scanning every key of the bucket, so its seconds after grow with "
            "the library; S3 answers a LIST from its index, so the requests are the figure to carry over."]
    return "\n".join(out)


SECTIONS = {"listing": ("listing", listing), "serve": ("serve", serve), "core": ("core", core), "musicnn": ("musicnn", musicnn), "decode": ("decode", decode), "incremental": ("incremental", incremental), "gpu_stage": ("gpu_stage", gpu_stage), "chaos": ("chaos", chaos), "separation": ("separation", separation), "scale": ("scale", scale),
            "aggregate_memory": ("aggregate_memory", aggregate_memory), "gpu": ("gpu", gpu),
            "sampling": ("sampling", sampling), "sampling_log_odds": ("sampling_log_odds", sampling),
            "quality": ("quality", quality), "precision": ("precision", precision), "target": ("target", target),
            "catalogue_memory": ("catalogue_memory", catalogue_memory), "presets": ("presets", presets),
            "cpu_presets": ("cpu_presets_tiny", stage_presets), "gpu_presets": ("gpu_presets", stage_presets),
            "musicnn_presets": ("musicnn_presets", musicnn_presets), "cpu_levers": ("cpu_levers_demucs", levers),
            "gpu_levers": ("gpu_levers", levers)}


def main() -> None:
    # the tables live in the docs pages (docs/benchmarks.md), wherever a page holds a marker
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = before = page.read_text()
        for section, (name, fmt) in SECTIONS.items():
            r = _load(name)
            if r is None:
                continue
            pat = re.compile(rf"<!-- bench:{section} -->\n.*?<!-- /bench:{section} -->", re.S)
            block = f"<!-- bench:{section} -->\n{fmt(r)}\n<!-- /bench:{section} -->"
            text = pat.sub(lambda m, block=block: block, text)
        if text != before:
            page.write_text(text)
            print(f"{page.relative_to(ROOT)}: tables updated from", RESULTS)


if __name__ == "__main__":
    main()
