"""The product's own GPU path: the paper-style model (AST + RoBERTa, late fusion) loaded
from a musiclime checkpoint by the registry, explained by the pipeline's GPU stage
(:class:`musiclime.gpu_stage.ExplainStage`, the code the Ray actor wraps), with and
without demucs separating in the same stage.

Sizes: ``base`` = AST-base (12 layers, 768 hidden, 1024 frames x 128 mels) and
RoBERTa-base (12 layers, 768 hidden), htdemucs-size demucs (the published htdemucs
architecture); all random init (nothing can be downloaded), saved and loaded the way a
user's folders are. ``tiny`` checks the script on a CPU (the test suite runs it).

Reported: tracks per GPU-hour with provided stems and with demucs separating, the
explained masks per second against the bare forward limit (``predict_proba`` on ready
inputs, best batch), the share of a track's time spent separating, peak GPU memory.
Needs torch, torchaudio, transformers (+ demucs and julius, pure Python, for the
separation part); no Ray, Polars or soundfile.

    python bench/bench_gpu_stage.py --size base --tracks 20      # on a GPU (bench/gpu.sh)
    python bench/bench_gpu_stage.py --size tiny --tracks 2 --num-samples 64   # CPU smoke
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SOURCES = ["drums", "bass", "other", "vocals"]
TINY_AST = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                num_mel_bins=64, max_length=256)
TINY_TEXT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
TINY_DEMUCS = dict(channels=8, depth=4, t_layers=0, segment=4)


def build_models(root: Path, size: str) -> tuple[Path, Path]:
    """(musiclime checkpoint of the paper model, demucs repo) written under ``root``."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel, RobertaConfig, RobertaModel, RobertaTokenizerFast

    from bench.common import WORDS
    from musiclime.models.checkpoint import save_checkpoint
    from musiclime.models.paper import paper_model
    tiny = size == "tiny"
    torch.manual_seed(0)
    ast_cfg = ASTConfig(**(TINY_AST if tiny else {}))   # defaults: AST-base, 1024 frames x 128 mels
    ASTModel(ast_cfg).save_pretrained(root / "ast")
    ASTFeatureExtractor(num_mel_bins=ast_cfg.num_mel_bins, max_length=ast_cfg.max_length).save_pretrained(root / "ast")
    text = root / "roberta"
    text.mkdir()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([" ".join(WORDS)] * 50, vocab_size=300,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(text))
    tok = RobertaTokenizerFast(vocab=str(text / "vocab.json"), merges=str(text / "merges.txt"))
    tok.save_pretrained(text)
    RobertaModel(RobertaConfig(vocab_size=50265 if not tiny else len(tok), pad_token_id=tok.pad_token_id,
                               **(TINY_TEXT if tiny else {}))).save_pretrained(text)
    model = paper_model(root / "ast", text, [f"class{i}" for i in range(10)], trainable=False)
    ckpt = save_checkpoint(model, root / "paper-model")
    repo = root / "demucs"
    repo.mkdir()
    from demucs.htdemucs import HTDemucs
    from safetensors.torch import save_file
    kwargs = dict(sources=SOURCES, audio_channels=2, samplerate=44100, **(TINY_DEMUCS if tiny else {}))
    demucs = HTDemucs(**kwargs).eval()
    save_file({k: v.contiguous() for k, v in demucs.state_dict().items()}, str(repo / "rand0.safetensors"),
              metadata={"klass": "demucs.htdemucs.HTDemucs", "args": "[]", "kwargs": json.dumps(kwargs)})
    (repo / "htdemucs_random.yaml").write_text("models: ['rand0']\n")
    return ckpt, repo


def fbank_check(ast_dir: Path, device: str) -> float:
    """Max |difference| between the filterbank the model computes on ``device`` for a batch
    and the Hugging Face extractor's, clip by clip on the CPU."""
    import numpy as np
    import torch
    from transformers import ASTFeatureExtractor

    from musiclime.models.features import KaldiFbank
    fe = ASTFeatureExtractor.from_pretrained(str(ast_dir))
    rng = np.random.default_rng(0)
    clips = np.stack([rng.normal(0, s, 16000 * 4).astype(np.float32) for s in (0.01, 0.1, 0.5)])
    with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16):  # as the stage runs it
        got = KaldiFbank.from_extractor(fe).to(device)(torch.tensor(clips, device=device)).float().cpu()
    want = torch.stack([fe([c], sampling_rate=16000, return_tensors="pt")["input_values"][0] for c in clips])
    return float((got - want).abs().max())


def tracks(n: int, seconds: float, separated: bool, offset: int = 0):
    from bench.common import synthetic_track
    from musiclime.records import TrackInput
    from musiclime.separation.base import STEM_NAMES
    out = []
    for i in range(n):
        stems, lyric = synthetic_track(16000, seconds, seed=offset + i)
        out.append(TrackInput(f"t{offset + i}", i, offset + i, lyric, 16000, None if separated else stems,
                              STEM_NAMES, mix=stems.sum(0) if separated else None))
    return out


def timed_stage(name: str, stage, warm_up, batch, sync, after_warm_up=None, per_call: int = 1) -> tuple[list, float]:
    """``stage`` over ``batch`` after a warm-up call (kernels, allocator): its results and
    the wall seconds; a track that did not explain stops the benchmark. ``per_call`` > 1:
    ``stage.explain_batch`` on that many tracks at a time (``warm_up`` is then a list)."""
    def call(inputs):
        return stage.explain_batch(inputs) if per_call > 1 else [stage(inp) for inp in inputs]
    call(warm_up if isinstance(warm_up, list) else [warm_up])
    if after_warm_up:
        after_warm_up()
    sync()
    t0 = time.perf_counter()
    results = [r for i in range(0, len(batch), per_call) for r in call(batch[i:i + per_call])]
    sync()
    wall = time.perf_counter() - t0
    from musiclime.records import Predictions
    bad = [r for r in results if not isinstance(r, Predictions)]
    if bad:
        raise SystemExit(f"{name}: {bad[0]}")
    return results, wall


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", choices=["base", "tiny"], default="base")
    ap.add_argument("--tracks", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--whole-seconds", type=float, default=60.0, help="track length of the --window whole row")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    ap.add_argument("--out", default=None, help="folder for gpu_stage.json (default: bench/results)")
    ap.add_argument("--presets", action="store_true",
                    help="instead: each --quality preset, provided stems and demucs separating, with the "
                         "model's FLOPs per row and the fraction of the chip's dense bf16 peak -> gpu_presets.json "
                         "(cpu_presets.json on a CPU: tracks per core-hour)")
    ap.add_argument("--compile", default="off", choices=["off", "on", "graphs"], help="the stage's --compile (--presets)")
    ap.add_argument("--qualities", nargs="+", default=["paper", "steady", "fast"], help="presets of --presets")
    ap.add_argument("--designs", action="store_true",
                    help="instead: the sampling designs on provided stems (the paper's iid 1000, one block of "
                         "orthogonal-grid, --num-samples auto) and each encoder's cost per row -> gpu_designs.json")
    ap.add_argument("--levers", action="store_true",
                    help="instead: each speed lever against the same baseline (SDPA kernels, --compile on/graphs, "
                         "pinned copies, demucs batched and under bf16) -> gpu_levers.json (bench/gpu_levers.py)")
    ap.add_argument("--parts", nargs="+", choices=["encoder", "copies", "demucs"], help="parts of --levers")
    ap.add_argument("--batch", type=int, default=None, help="encoder rows per call of --levers (GPU 256, CPU 4)")
    ap.add_argument("--no-compile-levers", action="store_true", help="--levers without the compile rows (a CPU smoke)")
    ap.add_argument("--demucs-batch", type=int, default=8, help="tracks per demucs call of --levers")
    ap.add_argument("--demucs-tracks", type=int, default=16, help="10-s tracks separated per --levers row")
    args = ap.parse_args(argv)
    if args.levers:
        from bench.gpu_levers import compare_levers
        return compare_levers(args)
    if args.designs:
        return compare_designs(args)
    if args.presets:
        from bench.gpu_presets import compare_presets
        return compare_presets(args)
    import torch

    from bench.common import write_result
    from musiclime.explainer import ExplainerSpec
    from musiclime.gpu_stage import ExplainStage
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    work = Path(tempfile.mkdtemp(prefix="musiclime-gpu-"))
    t0 = time.perf_counter()
    ckpt, repo = build_models(work, args.size)
    print(f"models written in {time.perf_counter() - t0:.1f} s", flush=True)
    fbank_err = fbank_check(ckpt.parent / "ast", device)
    print(f"filterbank on {device} vs the extractor: max |diff| {fbank_err:.2e}", flush=True)
    spec = ExplainerSpec(num_samples=args.num_samples, design="iid")
    runs = {}
    # whole_track: --window whole on longer tracks (the AST hears 10.24 s windows; the mean of
    # their probabilities is the track's prediction): cost against windows
    for name, separated, window, seconds in (("provided_stems", False, "middle", args.seconds),
                                             ("demucs_in_stage", True, "middle", args.seconds),
                                             ("whole_track", False, "whole", args.whole_seconds)):
        separator = ("demucs", {"model_name": "htdemucs_random", "repo": str(repo)}, str(work / "stems")) \
            if separated else None
        stage = ExplainStage(str(ckpt), spec, "both", 10, device=device, separator=separator,
                             precision=args.precision, window=window)
        results, wall = timed_stage(name, stage, tracks(1, seconds, separated, offset=10_000)[0],
                                    tracks(args.tracks if window == "middle" else max(1, args.tracks // 4), seconds,
                                           separated), sync,
                                    torch.cuda.reset_peak_memory_stats if cuda else None)
        predict_s = sum(r.timings["predict_s"] for r in results)
        separate_s = sum(r.input.timings.get("separate_s", 0.0) for r in results)
        runs[name] = {"tracks": len(results), "seconds": wall, "tracks_per_gpu_hour": 3600 * len(results) / wall,
                      "s_per_track": wall / len(results), "predict_s_per_track": predict_s / len(results),
                      "separate_s_per_track": separate_s / len(results),
                      "masks_per_s": args.num_samples * len(results) / predict_s,
                      "model_rows_per_track": sum(r.model_rows for r in results) / len(results),
                      "peak_gpu_mem_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None,
                      "track_seconds": seconds, "windows": results[0].windows}
        print(name, json.dumps(runs[name]), flush=True)
        model = stage.model
    # the bare forward limit of the same model: predict_proba on ready inputs, best batch
    from bench.common import synthetic_track
    stems, lyric = synthetic_track(16000, args.seconds, seed=99)
    audio = torch.tensor(stems.sum(0), device=device)[None]
    limit = {}
    for bs in ((1, 4, 16) if not cuda else (16, 64, 128, 256)):
        a, t = audio.expand(bs, -1).contiguous(), [lyric] * bs
        with stage.autocast():
            model.predict_proba(a, t)
            sync()
            t0, rows = time.perf_counter(), 0
            while time.perf_counter() - t0 < (0.3 if not cuda else 2.0):
                model.predict_proba(a, t)
                rows += bs
            sync()
        limit[bs] = rows / (time.perf_counter() - t0)
    best = max(limit, key=limit.get)
    for r in runs.values():
        r["limit_ratio"] = r["masks_per_s"] / limit[best]
    result = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "size": args.size,
              "model": ("AST-base (12 x 768, 1024 frames x 128 mels) + RoBERTa-base (12 x 768), late fusion, "
                        "random init, from a musiclime checkpoint; htdemucs-size demucs, random init")
              if args.size == "base" else "tiny sizes (script check)",
              "precision": args.precision, "num_samples": args.num_samples, "seconds_per_track": args.seconds,
              "fbank_max_abs_diff": fbank_err, "limit_rows_per_s": limit[best], "best_batch": best, "limit_per_batch": limit, "runs": runs}
    print(json.dumps(result, indent=2))
    print("wrote", write_result("gpu_stage" if args.size == "base" else "gpu_stage_smoke", result, args.out))
    return result


def compare_designs(args) -> dict:
    """Seconds per track of the product's GPU stage under each sampling design, and what one
    audio-encoder row and one text-encoder row cost at batch 256 (to turn the encoder rows
    bench/bench_sampling.py counts on the demo models into time on paper-size models)."""
    import torch

    from bench.common import synthetic_track, write_result
    from musiclime.explainer import ExplainerSpec
    from musiclime.gpu_stage import ExplainStage
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    work = Path(tempfile.mkdtemp(prefix="musiclime-gpu-"))
    ckpt, _ = build_models(work, args.size)
    specs = {"iid 1000 (paper)": ExplainerSpec(num_samples=1000, design="iid"),
             "orthogonal-grid, 1 block": ExplainerSpec(num_samples=2, design="orthogonal-grid"),
             "auto (orthogonal-grid)": ExplainerSpec(num_samples="auto")}
    runs = {}
    for name, spec in specs.items():
        stage = ExplainStage(str(ckpt), spec, "both", 10, device=device, precision=args.precision)
        results, wall = timed_stage(name, stage, tracks(1, args.seconds, False, offset=10_000)[0],
                                    tracks(args.tracks, args.seconds, False), sync)
        runs[name] = {"tracks": len(results), "s_per_track": wall / len(results),
                      "tracks_per_gpu_hour": 3600 * len(results) / wall,
                      "model_rows_per_track": sum(r.model_rows for r in results) / len(results),
                      "num_samples_per_track": sum(len(r.plan.masks) for r in results) / len(results)}
        print(name, json.dumps(runs[name]), flush=True)
        model = stage.model
    stems, lyric = synthetic_track(16000, args.seconds, seed=99)
    bs = 256 if cuda else 4
    audio = torch.tensor(stems.sum(0), device=device)[None].expand(bs, -1).contiguous()
    cost = {}
    for part, call in (("audio", lambda: model.embed_audio(audio)), ("text", lambda: model.embed_lyrics([lyric] * bs))):
        with torch.inference_mode(), stage.autocast():
            call()
            sync()
            t0, rows = time.perf_counter(), 0
            while time.perf_counter() - t0 < (2.0 if cuda else 0.3):
                call()
                rows += bs
            sync()
        cost[part] = (time.perf_counter() - t0) / rows
    result = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "size": args.size,
              "precision": args.precision, "seconds_per_track": args.seconds, "runs": runs,
              "s_per_encoder_row": cost, "batch": bs}
    print(json.dumps(result, indent=2))
    print("wrote", write_result("gpu_designs" if args.size == "base" else "gpu_designs_smoke", result, args.out))
    return result


if __name__ == "__main__":
    main()
