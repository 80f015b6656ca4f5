"""The tables of the ``--quality`` presets and of the GPU stage's levers (bench/update_readme.py
writes them into the pages): the demo models' presets, the same on musicnn, tracks per hour
per preset through the product's stage, and each speed lever against one baseline."""
from __future__ import annotations


def table(header: list[str], rows: list[list]) -> list[str]:
    """Markdown table lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
           ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]



def _stabilities(per_track: list[dict], preset: str) -> list[float]:
    import itertools
    out = []
    for t in per_track:
        tops = [set(x["top"]) for x in t["runs"].get(preset, [])]
        if len(tops) > 1:
            pairs = list(itertools.combinations(tops, 2))
            out.append(sum(len(a & b) / len(a | b) for a, b in pairs) / len(pairs))
    return out


def quality_cells(x: dict, versus_paper: bool) -> list[str]:
    """A preset summary's Jaccard to each reference and AOPC (with the paired difference to
    ``paper``), stability over all and over resolved tracks, top-10 resolved."""
    f = lambda v, d=2: "–" if v is None else f"{v:.{d}f}"  # noqa: E731

    def vs(key: str, d: int = 2) -> str:
        v, se = x[f"{key}_diff"], x[f"{key}_se"]
        return "" if not versus_paper or v is None or se is None else f" ({v:+.{d}f} ± {se:.{d}f})"
    return [f(x["jaccard_iid"]) + vs("jaccard_iid"), f(x["jaccard_cross"]) + vs("jaccard_cross"),
            f(x["aopc"], 3) + vs("aopc", 3),
            f"{f(x['stability_median'])} / {f(x['stability_p10'])} ({x['stability_tracks']})",
            f"{f(x['stability_resolved_median'])} / {f(x['stability_resolved_p10'])} ({x['stability_resolved_tracks']})",
            f(x["topk_resolved"])]


def presets(r) -> str:
    """The --quality presets per task and view, then the goals over both tasks."""
    import numpy as np
    f = lambda v, d=2: "–" if v is None else f"{v:.{d}f}"  # noqa: E731
    out = []
    for task, t in r["tasks"].items():
        rows = []
        for view in ("late_fusion", "predict_proba"):
            base = t[view]["summary"]["paper"]
            for name, x in t[view]["summary"].items():
                late = view == "late_fusion"
                work = f"{x['audio_rows']:.0f} / {x['text_rows']:.0f}" if late else f"{x['model_rows']:.0f}"
                ratio = base["model_rows"] / x["model_rows"]
                rows.append([f"`{name}`", view.replace("_", " "), f"{x['design']}, {x['target']}", work,
                             f"{ratio:.1f}x",
                             *quality_cells(x, name != "paper"), f(x["seconds"], 1),
                             f"{f(x['fit_s'], 2)} s / {f(x['fit_peak_mb'], 0)} MB"])
        refs = t.get("references", {})
        out.append(f"**{task}** ({r['tracks']} held-out tracks; {r['seeds']} seeds, `paper` {r['paper_seeds']}, "
                   f"`steady` in the predict_proba view {r['pp_steady_seeds']}; references: {r['ref_samples']:,} "
                   f"i.i.d. masks on {refs.get('iid_tracks', '?')} tracks, orthogonal-cross at "
                   f"{r['cross_work']:,} encoder rows on {refs.get('cross_tracks', '?')}):")
        out.append("")
        out += table(["preset", "view", "design, target", "audio / text rows or model rows", "less work",
                      "top-10 Jaccard to 16k i.i.d. (vs paper)", "to orthogonal-cross ref (vs paper)",
                      "deletion AOPC (vs paper)", "across seeds: median / p10 (tracks)",
                      "same, tracks the 16k ref resolves", "top-10 resolved", "s/track (1 core)",
                      "fit: s / peak MB"], rows)
        out.append("")
    # the goals, over both tasks' tracks
    lines = []
    for view, need in (("late_fusion", 10), ("predict_proba", 4)):
        stab = [v for t in r["tasks"].values() for v in _stabilities(t[view]["per_track"], "steady")]
        if stab and view == "late_fusion":
            med, p10 = float(np.median(stab)), float(np.percentile(stab, 10))
            ok = med >= 0.9 and p10 >= 0.8
            lines.append(f"- `steady` ({view.replace('_', ' ')}): stability median {med:.2f}, 10th percentile "
                         f"{p10:.2f} over {len(stab)} tracks of {len(r['tasks'])} tasks (goal 0.9 / 0.8): "
                         f"{'met' if ok else 'missed'}; per task: " + ", ".join(
                             f"{task} {x['stability_median']:.2f} / {x['stability_p10']:.2f}"
                             for task, x in ((k, t[view]["summary"]["steady"]) for k, t in r["tasks"].items())) + ".")
        for task, t in r["tasks"].items():
            x, base = t[view]["summary"]["fast"], t[view]["summary"]["paper"]
            ratio = base["model_rows"] / x["model_rows"]
            aopc_ok = x["aopc_diff"] is not None and x["aopc_se"] is not None and x["aopc_diff"] + x["aopc_se"] >= 0
            verdicts = []
            for ref, label in (("iid", "16k i.i.d."), ("cross", "orthogonal-cross")):
                d, se, n = x[f"jaccard_{ref}_diff"], x[f"jaccard_{ref}_se"], x[f"jaccard_{ref}_tracks"]
                if se is None:
                    verdicts.append(f"to the {label} reference ({n} tracks): too few tracks to say")
                    continue
                ok = d + se >= 0 and aopc_ok and ratio >= need - 0.05
                verdicts.append(f"to the {label} reference ({n} tracks) Jaccard {x[f'jaccard_{ref}']:.2f} vs "
                                f"{base[f'jaccard_{ref}']:.2f} ({d:+.2f} ± {se:.2f}): {'met' if ok else 'missed'}")
            lines.append(f"- `fast`, {task}, {view.replace('_', ' ')}: {ratio:.1f}x less work (goal {need}x), AOPC "
                         f"{f(x['aopc'], 3)} vs {f(base['aopc'], 3)}; " + "; ".join(verdicts) + ".")
    out += lines
    out.append("")
    out.append(f"`python bench/bench_presets.py`, measured {r['when']} on {r['machine']['cpus']} CPUs, one process "
               f"and one thread per task.")
    return "\n".join(out).rstrip()


def _per_call(r) -> int:
    return max((x.get("tracks_per_call", 1) for x in r["runs"].values()), default=1)


def stage_presets(r) -> str:
    """bench_gpu_stage.py --presets: tracks per hour per preset, FLOPs, fraction of peak."""
    gpu = r["device"] != "cpu"
    unit = "GPU-hour" if gpu else f"core-hour ({r['threads']} thread per process)"
    rows = []
    for name, x in r["runs"].items():
        rate = x["tracks_per_hour"] / (1 if gpu else max(1, r["threads"]))
        rows.append([name, x["design"], f"{x['audio_rows']:.0f} / {x['text_rows']:.0f}", f"{x['s_per_track']:.2f}",
                     f"{x['separate_s_per_track']:.2f}", f"{rate:,.0f}",
                     f"{x['encoder_flop_per_s'] / 1e12:.3f}" if gpu else f"{x['encoder_flop_per_s'] / 1e9:.1f}",
                     "–" if x["fraction_of_peak"] is None else f"{x['fraction_of_peak']:.2f}"])
    out = table(["preset, stems", "design", "audio / text rows", "s/track", "of it separating (s)",
                 f"tracks per {unit}", "encoder TFLOP/s" if gpu else "encoder GFLOP/s", "fraction of dense bf16 peak"],
                rows)
    f = r["flops_per_row"]
    out += ["", f"{r['device']}, {r['size']} sizes, {r['seconds_per_track']:g}-s tracks, precision {r['precision']}; "
            f"FLOPs per row: audio encoder {f['audio'] / 1e9:.2f} G, text encoder {f['text'] / 1e9:.3f} G "
            f"(`python bench/bench_gpu_stage.py --presets`, measured {r['when']}). \"demucs separating\" is a first "
            f"night ({r.get('separation_precision') or 'fp32'} demucs, {_per_call(r)} track(s) per call); "
            f"\"provided stems\" is a later night, whose stems come from the stem cache."]
    return "\n".join(out)


def musicnn_presets(r) -> str:
    """bench_musicnn_presets.py: the presets on the real tagger, beside the demo models'."""
    base = r["summary"]["paper"]
    rows = []
    for name, x in r["summary"].items():
        rows.append([f"`{name}`", f"{x['design']}, {x['target']}", f"{x['model_rows']:.0f}",
                     f"{base['model_rows'] / x['model_rows']:.1f}x", *quality_cells(x, name != "paper")])
    out = table(["preset", "design, target", "model rows", "less work", "top-10 Jaccard to 16k i.i.d. (vs paper)",
                 f"to orthogonal {r['cross_rows']:,}-row ref (vs paper)", "deletion AOPC (vs paper)",
                 "across seeds: median / p10 (tracks)", "same, tracks the 16k ref resolves", "top-10 resolved"],
                rows)
    kinds = sorted({t["kind"].split("+")[0] for t in r["per_track"]})
    seeds = ", ".join(f"`{p}` {n}" for p, n in r["seeds"].items())
    out += ["", f"`{r['model']}`, audio alone (4 stems x 10 segments of a 3-s excerpt), the first predicted tag of "
            f"the track's kind explained; {r['tracks']} rendered-score tracks ({', '.join(kinds)}); seeds: {seeds}; "
            f"references: {r['ref_samples']:,} i.i.d. masks and `{r['cross_design']}` at {r['cross_rows']:,} rows "
            f"per track (`python bench/bench_musicnn_presets.py`, measured {r['when']}). Cost per preset: the "
            f"tracks per core-hour of the validity table above."]
    return "\n".join(out)


def levers(r) -> str:
    """bench_gpu_stage.py --levers: a row per lever against the same baseline."""
    f = lambda v, d=2: "–" if v is None else f"{v:,.{d}f}"  # noqa: E731
    out = []
    enc = r.get("encoder")
    if enc:
        rows = []
        for name, x in enc["rows"].items():
            if "error" in x:
                rows.append([name, "–", "–", "–", "–", "–", x["error"]])
                continue
            rows.append([name, f(x["compile_s"], 0), f(x["audio_rows_per_s"], 0), f(x["audio_fraction_of_peak"]),
                         f(x["text_rows_per_s"], 0), f(x["text_fraction_of_peak"]), ""])
        out += table(["lever", "compile (s)", f"AST rows/s at batch {enc['batch']}", "fraction of dense bf16 peak",
                      "RoBERTa rows/s", "fraction of peak", "note"], rows)
        fl = enc["flops_per_row"]
        out += ["", f"FLOPs per row: AST {fl['audio'] / 1e9:.1f} G, RoBERTa {fl['text'] / 1e9:.2f} G; attention "
                f"kernels seen: {', '.join(sorted(set(enc['attention_kernels']['audio']))) or 'none'}. Compile seconds "
                "after the first lever are helped by inductor's kernel cache, as a machine's later actors are.", ""]
    cp = r.get("copies")
    if cp:
        out += [f"Stems to the device ({cp['bytes_per_track'] / 1e6:.1f} MB a track): pageable "
                f"{cp['pageable']['ms_per_track']:.2f} ms, pinned + non-blocking "
                f"{cp['pinned, non-blocking']['ms_per_track']:.2f} ms.", ""]
    dm = r.get("demucs")
    if dm:
        rows = [[name, x["precision"], x["tracks_per_call"], f(x["s_per_track"], 3),
                 f(x.get("relative_error_vs_fp32"), 4) if "relative_error_vs_fp32" in x else "–"]
                for name, x in dm["rows"].items()]
        out += table(["demucs (htdemucs size)", "precision", "tracks per call", "s per 10-s track",
                      "relative error vs fp32 (worst stem)"], rows)
        out += ["", f"Batched vs alone, fp32: largest relative difference "
                f"{dm['batched_vs_alone_max_relative_difference']:.1e}; {dm['tracks']} tracks."]
    out += ["", f"{r['device']}, {r['size']} sizes, torch {r.get('torch', '?')} "
            f"(`python bench/bench_gpu_stage.py --levers`, measured {r['when']})."]
    return "\n".join(out).strip()
