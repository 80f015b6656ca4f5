"""``bench_gpu_stage.py --presets``: the product's GPU stage under each ``--quality`` preset,
with the work counted in FLOPs against the chip's physical limit.

Per preset, on the paper-size model (AST-base + RoBERTa-base, late fusion) with provided
stems and with demucs separating in the stage: tracks per GPU-hour (per core-hour on a
CPU), encoder rows per track, and the achieved FLOP/s of the encoders as a fraction of the
chip's dense bf16 peak. FLOPs per row are counted once per encoder by
``torch.utils.flop_counter`` on a one-row forward (matmuls, convolutions, attention).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

# dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets
DENSE_BF16_TFLOPS = {"H200": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0,
                     "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0}


def chip_peak(name: str) -> float | None:
    """The chip's dense bf16 peak in FLOP/s, None where the name is not in the table."""
    for key, tflops in DENSE_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def flops_per_row(model, audio, lyric: str) -> dict[str, float]:
    """FLOPs of one audio-encoder row and one text-encoder row of a late-fusion model."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    out = {}
    for part, call in (("audio", lambda: model.embed_audio(audio[:1])), ("text", lambda: model.embed_lyrics([lyric]))):
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            call()
        out[part] = float(counter.get_total_flops())
    return out


def attention_kernels(model, audio, lyric: str, cuda: bool) -> dict[str, list[str]]:
    """Which attention kernels one forward of each encoder runs, read from the profiler
    (SDPA picks flash, memory-efficient, cuDNN or the math fallback at run time)."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    out = {}
    for part, call in (("audio", lambda: model.embed_audio(audio[:2])), ("text", lambda: model.embed_lyrics([lyric] * 2))):
        with torch.inference_mode(), profile(activities=acts) as prof:
            call()
        names = {e.key for e in prof.key_averages()}
        out[part] = sorted(n for n in names if any(k in n.lower() for k in
                                                   ("flash", "efficient_attention", "cudnn_attention",
                                                    "attention_math", "scaled_dot_product")))
    return out


def encoder_rows(result) -> tuple[int, int]:
    """(audio rows, text rows) one track's plan asked for: the half-masks of a crossed design,
    else one of each per joint row (what the runner evaluates at most)."""
    size = result.plan.size
    if size is not None and size.grid is not None:
        return int(size.grid[0]), int(size.grid[1])
    return len(result.plan.masks), len(result.plan.masks)


def compare_presets(args) -> dict:
    import torch

    from bench.bench_gpu_stage import build_models, timed_stage, tracks
    from bench.common import synthetic_track, write_result
    from musiclime.explainer import ExplainerSpec
    from musiclime.gpu_stage import ExplainStage
    from musiclime.separation import StemCache
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak = chip_peak(name) if cuda else None
    work = Path(tempfile.mkdtemp(prefix="musiclime-presets-"))
    ckpt, repo = build_models(work, args.size)
    # one stage for every row: the model loads (and compiles, with --compile) once; each
    # preset gets its own spec, and its own empty stem cache so that demucs separates
    separator = ("demucs", {"model_name": "htdemucs_random", "repo": str(repo)}, str(work / "stems"))
    stage = ExplainStage(str(ckpt), ExplainerSpec(quality=args.qualities[0]), "both", 10, device=device,
                         separator=separator, precision=args.precision, compile=args.compile)
    stems, lyric = synthetic_track(16000, args.seconds, seed=99)
    audio = torch.tensor(stems.sum(0), device=device)[None]
    with stage.autocast():
        flops = flops_per_row(stage.model, audio, lyric)
        kernels = attention_kernels(stage.model, audio.expand(2, -1).contiguous(), lyric, cuda)
    print("attention kernels:", kernels, flush=True)
    runs = {}
    per_call = max(1, args.demucs_batch)
    for quality in args.qualities:
        stage.spec = ExplainerSpec(quality=quality)
        for separated in (False, True):
            stage.cache = StemCache(work / f"stems-{quality}")
            calls = per_call if separated else 1  # a call's tracks are separated together
            results, wall = timed_stage(f"{quality}/{separated}", stage, tracks(calls, args.seconds, separated, 10_000),
                                        tracks(args.tracks, args.seconds, separated), sync, per_call=calls)
            rows = [encoder_rows(r) for r in results]
            predict_s = sum(r.timings["predict_s"] for r in results)
            done = sum(a * flops["audio"] + t * flops["text"] for a, t in rows)
            key = f"{quality}, {'demucs separating' if separated else 'provided stems'}"
            runs[key] = {"quality": quality, "separated": separated, "tracks": len(results), "seconds": wall,
                         "tracks_per_hour": 3600 * len(results) / wall, "s_per_track": wall / len(results),
                         "separate_s_per_track": sum(r.input.timings.get("separate_s", 0.0) for r in results) / len(results),
                         "tracks_per_call": calls,
                         "audio_rows": sum(a for a, _ in rows) / len(rows), "text_rows": sum(t for _, t in rows) / len(rows),
                         "encoder_flop_per_s": done / predict_s, "fraction_of_peak": done / predict_s / peak if peak else None,
                         "design": results[0].plan.design}
            print(key, json.dumps(runs[key]), flush=True)
    result = {"device": name, "size": args.size, "precision": args.precision, "seconds_per_track": args.seconds,
              "compile": args.compile, "compiled": stage.compiled,
              "separation_precision": stage.separator.precision, "bf16_check_error": stage.separator.bf16_error,
              "threads": torch.get_num_threads(), "flops_per_row": flops, "attention_kernels": kernels,
              "peak_flop_per_s": peak, "runs": runs,
              "note": "tracks_per_hour is per GPU on a GPU, per process (of --threads) on a CPU"}
    stem = "gpu_presets" if cuda else "cpu_presets"
    print("wrote", write_result(stem if args.size == "base" else f"{stem}_{args.size}", result, args.out))
    return result
