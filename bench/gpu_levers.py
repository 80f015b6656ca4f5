"""``bench_gpu_stage.py --levers``: the GPU stage's speed levers, one row each, on the
paper-size model (AST-base + RoBERTa-base from a musiclime checkpoint, htdemucs-size demucs;
random init), so each lever's gain is read against the same baseline in one run.

- ``encoder``: the AST encoder (filterbank included) at ``--batch`` rows under the stage's
  autocast: eager with SDPA's own choice, SDPA forced to flash and to memory-efficient,
  ``--compile on`` (inductor; the filterbank fuses with the first kernels) and
  ``--compile graphs`` (CUDA graphs). Rows/s, FLOP/s, the fraction of the chip's dense
  bf16 peak (FLOPs per row counted by ``torch.utils.flop_counter``), the attention kernels
  the profiler saw, the compile seconds. Also RoBERTa-base at the same batch, eager and
  compiled.
- ``copies``: one track's stems host -> device, pageable vs pinned + non-blocking.
- ``demucs``: seconds per 10-s track separated alone (fp32, today's path), ``--demucs-batch``
  tracks in one call (fp32), and the same under bf16 autocast, with bf16's relative error
  against fp32 on each track (the stage uses bf16 only within ``BF16_TOLERANCE``).

Writes ``gpu_levers.json`` (``cpu_levers*.json`` on a CPU, where the numbers check the script
and the error, not speed).
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path


def _rate(call, rows: int, sync, seconds: float) -> float:
    """Rows per second of ``call`` (``rows`` per call) over at least ``seconds``, warm."""
    call()
    sync()
    t0, done = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        call()
        done += rows
    sync()
    return done / (time.perf_counter() - t0)


def _sdpa(backend: str | None):
    if backend is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel({"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION}[backend])


def encoder_rows(ckpt: Path, device: str, batch: int, seconds: float, peak: float | None, sync,
                 compile_levers: bool = True) -> dict:
    """Each lever on the AST encoder (and the text encoder, eager and compiled)."""
    import torch

    from bench.common import synthetic_track
    from bench.gpu_presets import attention_kernels, flops_per_row
    from musiclime.accelerate import compile_model
    from musiclime.gpu_stage import ExplainStage
    from musiclime.models.registry import load_model
    cuda = device.startswith("cuda")
    stems, lyric = synthetic_track(16000, 10.0, seed=99)
    audio = torch.tensor(stems.sum(0), device=device)[None].expand(batch, -1).contiguous()
    lyrics = [lyric] * batch
    rows = {}
    levers = [("eager, SDPA's choice", "off", None), ("SDPA flash", "off", "flash"),
              ("SDPA memory-efficient", "off", "efficient"), ("--compile on", "on", None),
              ("--compile graphs (CUDA graphs)", "graphs", None)]
    autocast = ExplainStage.autocast_for(device, "auto")
    flops = None
    for name, mode, backend in levers:
        if (backend and not cuda) or (mode != "off" and not compile_levers):
            continue  # flash and memory-efficient kernels are CUDA's
        model = load_model(str(ckpt), device=device)
        torch._dynamo.reset()  # each lever traces afresh (inductor's kernel cache on disk stays, as for a user's next actor)
        t0 = time.perf_counter()
        compile_model(model, mode)
        try:
            with torch.inference_mode(), autocast, _sdpa(backend):
                if flops is None:
                    flops = flops_per_row(model, audio, lyric)
                    kernels = attention_kernels(model, audio[:2], lyric, cuda)
                model.embed_audio(audio)  # the compile happens here
                sync()
                compile_s = time.perf_counter() - t0
                audio_rate = _rate(lambda m=model: m.embed_audio(audio), batch, sync, seconds)
                text_rate = _rate(lambda m=model: m.embed_lyrics(lyrics), batch, sync, seconds) \
                    if backend is None else None
        except Exception as e:  # a lever this chip or build lacks is a row saying so
            rows[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
            continue
        rows[name] = {"compile": mode, "sdpa": backend or "auto", "compile_s": compile_s if mode != "off" else 0.0,
                      "audio_rows_per_s": audio_rate, "audio_flop_per_s": audio_rate * flops["audio"],
                      "audio_fraction_of_peak": audio_rate * flops["audio"] / peak if peak else None,
                      "text_rows_per_s": text_rate,
                      "text_fraction_of_peak": text_rate * flops["text"] / peak if peak and text_rate else None}
        print(name, rows[name], flush=True)
    return {"batch": batch, "flops_per_row": flops, "attention_kernels": kernels, "rows": rows}


def copies(device: str, sync, repeats: int = 20) -> dict:
    """ms per track of the stems' host -> device copy, pageable vs pinned + non-blocking."""
    import numpy as np
    import torch

    from musiclime.accelerate import to_device
    stems = np.random.default_rng(0).normal(0, 0.1, (4, 16000 * 10)).astype(np.float32)
    out = {}
    for name, pinned in (("pageable", False), ("pinned, non-blocking", True)):
        to_device(stems, device, pinned)
        sync()
        t0 = time.perf_counter()
        for _ in range(repeats):
            to_device(stems, device, pinned)
        sync()
        out[name] = {"ms_per_track": 1e3 * (time.perf_counter() - t0) / repeats}
    out["bytes_per_track"] = stems.nbytes
    del torch
    return out


def demucs_rows(repo: Path, device: str, batch: int, tracks: int, sync) -> dict:
    """Seconds per 10-s track: alone in fp32 (today), ``batch`` at once in fp32 and bf16."""
    from bench.common import synthetic_track
    from musiclime.separation.demucs import DemucsSeparator, relative_error
    mixes = [synthetic_track(16000, 10.0, seed=i)[0].sum(0) for i in range(tracks)]
    rows, stems = {}, {}
    for name, precision, size in (("alone, fp32", "fp32", 1), (f"{batch} per call, fp32", "fp32", batch),
                                  (f"{batch} per call, bf16", "bf16", batch)):
        sep = DemucsSeparator("htdemucs_random", repo, device=device, precision=precision)
        sep.separate_batch(mixes[:size], 16000)  # warm
        sync()
        t0 = time.perf_counter()
        got = []
        for i in range(0, tracks, size):
            got += sep.separate_batch(mixes[i:i + size], 16000)
        sync()
        rows[name] = {"precision": precision, "tracks_per_call": size,
                      "s_per_track": (time.perf_counter() - t0) / tracks}
        stems[name] = got
        if precision == "bf16":
            rows[name]["relative_error_vs_fp32"] = max(relative_error(a, b) for a, b in
                                                       zip(got, stems[f"{batch} per call, fp32"]))
            rows[name]["check_clip_error"] = sep.bf16_error
        print(name, rows[name], flush=True)
    alone, together = stems["alone, fp32"], stems[f"{batch} per call, fp32"]
    return {"tracks": tracks, "batch": batch, "rows": rows,
            "batched_vs_alone_max_relative_difference": max(relative_error(a, b) for a, b in zip(together, alone))}


def compare_levers(args) -> dict:
    import tempfile

    import torch

    from bench.bench_gpu_stage import build_models
    from bench.common import write_result
    from bench.gpu_presets import chip_peak
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    work = Path(tempfile.mkdtemp(prefix="musiclime-levers-"))
    ckpt, repo = build_models(work, args.size)
    result = {"device": name, "size": args.size, "peak_flop_per_s": chip_peak(name) if cuda else None,
              "torch": torch.__version__}
    parts = args.parts or ["encoder", "copies", "demucs"]
    stem = "gpu_levers" if cuda else "cpu_levers"
    stem = stem if args.size == "base" else f"{stem}_{args.size}"
    for part in parts:  # written after each part: a pass cut short by its time limit keeps what it measured
        if part == "encoder":
            result["encoder"] = encoder_rows(ckpt, device, args.batch or (256 if cuda else 4),
                                             2.0 if cuda else 0.3, result["peak_flop_per_s"], sync,
                                             not args.no_compile_levers)
        elif part == "copies":
            result["copies"] = copies(device, sync)
        else:
            result["demucs"] = demucs_rows(repo, device, args.demucs_batch, args.demucs_tracks, sync)
        print("wrote", write_result(stem, result, args.out), flush=True)
    return result
