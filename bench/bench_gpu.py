"""GPU speed of the explainer on an AST + RoBERTa-size late-fusion model (random init):
the reference loop (batch 10, numpy compose per mask) vs our batched compose + predict on
the device, at num_samples 1000; masks/s, GPU memory, and the limit ratio.

Runs with only torch/transformers/numpy/scikit-learn (no ray, polars, lime, soundfile).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class GPUModel(torch.nn.Module):
    """AST-base-size audio transformer on log-mels + RoBERTa-base-size text encoder, late fusion."""

    def __init__(self, sr=16000, classes=10, device="cuda", small=False):
        super().__init__()
        import torchaudio
        from transformers import ASTConfig, ASTModel, RobertaConfig, RobertaModel
        self.classes, self.sample_rate = [f"c{i}" for i in range(classes)], sr
        self.mel = torchaudio.transforms.MelSpectrogram(sr, n_fft=400, hop_length=160, n_mels=128)
        tiny = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64) if small else {}
        self.ast = ASTModel(ASTConfig(max_length=1024, **tiny))             # base: 768 hidden, 12 layers
        self.roberta = RobertaModel(RobertaConfig(vocab_size=50265, **tiny))  # base size
        hidden = self.ast.config.hidden_size
        self.classifier = torch.nn.Linear(hidden * 2, classes)
        self.device_ = device
        self.dtype = torch.float16 if device == "cuda" else torch.float32
        self.to(device).eval().to(self.dtype)
        self.mel.float()  # spectra in fp32; the transformers in half precision

    @property
    def device(self):
        return torch.device(self.device_)

    def embed_audio(self, audio):
        x = torch.log(self.mel(audio.to(self.device_, torch.float32)) + 1e-6).transpose(1, 2)  # [B, frames, 128]
        x = torch.nn.functional.pad(x, (0, 0, 0, max(0, 1024 - x.shape[1])))[:, :1024]
        return self.ast(input_values=x.to(self.dtype)).pooler_output

    def embed_lyrics(self, lyrics):
        """Word ids from a stable hash, padded to 128 tokens (speed only; no tokenizer files here)."""
        import zlib
        rows = [([0] + [zlib.crc32(w.encode()) % 50000 + 5 for w in s.split()][:126] + [2] + [1] * 128)[:128]
                for s in lyrics]
        ids = torch.tensor(rows, device=self.device_)
        return self.roberta(input_ids=ids, attention_mask=(ids != 1).long()).last_hidden_state[:, 0]

    def head(self, a, t):
        return torch.softmax(self.classifier(torch.cat([a, t], 1)).float(), 1)

    def predict_proba(self, audio, lyrics):
        with torch.inference_mode():
            return self.head(self.embed_audio(audio), self.embed_lyrics(lyrics))


class _PlainModel:
    """The same model seen through ``predict_proba`` only (no embedding reuse)."""

    def __init__(self, model):
        self.model, self.classes, self.sample_rate = model, model.classes, model.sample_rate
        self.device = model.device

    def predict_proba(self, audio, lyrics):
        return self.model.predict_proba(audio, lyrics)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU: checks the script, not speed")
    args = ap.parse_args(argv)
    from bench.common import synthetic_track
    from musiclime import AudioFactorization, LyricsFactorization, MusicLIME
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu needs a GPU (use --smoke to check the script on a CPU)")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    model = GPUModel(device=device, small=args.smoke)
    stems, lyric = synthetic_track(16000, 10.0)
    af = AudioFactorization(torch.from_numpy(stems).to(device), 16000)
    lf = LyricsFactorization(lyric)
    n = args.num_samples
    masks = MusicLIME(num_samples=n).plan(af, lf).masks
    # limit: bare forward on ready inputs, best batch over the grid
    ready_a = af.compose(masks[:256, :af.n_features])
    ready_t = lf.compose(masks[:256, af.n_features:])
    limit = {}
    for bs in ((1, 4, 16) if args.smoke else (1, 10, 32, 64, 128, 256)):
        model.predict_proba(ready_a[:bs], ready_t[:bs])
        sync()
        t0, rows = time.perf_counter(), 0
        while time.perf_counter() - t0 < (0.5 if args.smoke else 3):
            model.predict_proba(ready_a[:bs], ready_t[:bs])
            rows += bs
        sync()
        limit[bs] = rows / (time.perf_counter() - t0)
    best = max(limit, key=limit.get)
    # reference loop: numpy compose per mask, batches of 10
    host = stems
    L = host.shape[1] // 10

    def reference():
        out = []
        for i in range(0, n, 10):
            aud = []
            for row in masks[i:i + 10]:
                a = np.zeros(L * 10, np.float32)
                for f in np.nonzero(row[:af.n_features])[0]:
                    seg, st = divmod(f, 4)
                    a[seg * L:(seg + 1) * L] += host[st, seg * L:(seg + 1) * L]
                aud.append(a)
            out.append(model.predict_proba(torch.from_numpy(np.stack(aud)), lf.compose(masks[i:i + 10, af.n_features:])))
        sync()
        return out

    t0 = time.perf_counter(); reference(); t_ref = time.perf_counter() - t0
    print(f"reference {t_ref:.2f} s", flush=True)
    # compose alone: the 1000 perturbed audios, one batched op per block of 256, on the device
    sync(); t0 = time.perf_counter()
    for i in range(0, n, 256):
        af.compose(masks[i:i + 256, :af.n_features])
    sync(); t_compose = time.perf_counter() - t0
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    variants = {}
    configs = (("ours", model, dict(num_samples=n)),
               ("ours_predict_proba_only", _PlainModel(model), dict(num_samples=n)),
               # the grid design: 1000 joint rows from 250 audio x 250 lyrics half-masks
               ("ours_grid_250x250", model, dict(num_samples=n, design="grid", grid_size=(n // 4, n // 4))),
               # the grid that matched the reference's stability on the demo model (bench_sampling)
               ("ours_grid_256x256_4096rows", model, dict(num_samples=4096, design="grid", grid_size=(256, 256))))
    for name, m, kw in configs:
        ours = MusicLIME(batch_size="auto", seed=0, **kw)
        ours.explain(m, af, lf, labels=[0])  # warm-up
        sync(); t0 = time.perf_counter(); exp = ours.explain(m, af, lf, labels=[0]); sync()
        t = time.perf_counter() - t0
        variants[name] = {"seconds": t, "speedup_vs_reference": t_ref / t, "num_samples": exp.num_samples,
                          "masks_per_s": exp.num_samples / t, "limit_ratio": exp.num_samples / t / limit[best],
                          "encoder_passes": exp.model_rows, "reference_encoder_passes": 2 * n,
                          "timings": exp.timings}
        print(name, json.dumps(variants[name]), flush=True)
    t_ours = variants["ours"]["seconds"]
    res = {"gpu": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (smoke)", "num_samples": n,
           "model": "AST-base-size (12 layers, 768 hidden, 1024 frames) + RoBERTa-base-size, fp16, random init",
           "limit_rows_per_s": limit[best], "best_batch": best,
           "limit_per_batch": limit, "reference_s": t_ref, "reference_masks_per_s": n / t_ref,
           "reference_limit_ratio": n / t_ref / limit[best], "compose_1000_s": t_compose,
           "ours_s": t_ours, "speedup": t_ref / t_ours,
           "ours_masks_per_s": n / t_ours, "limit_ratio": n / t_ours / limit[best],
           "peak_gpu_mem_gb": torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else None,
           "variants": variants}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / ("gpu_smoke.json" if args.smoke else "gpu.json")).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
