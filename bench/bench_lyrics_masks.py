"""Perturbed-lyrics embeddings with MiniLM: re-tokenizing every perturbed string vs one
tokenization of the full lyric with word masks (``embed_lyrics_masks``).

    python bench/bench_lyrics_masks.py [--masks 1000]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_result  # noqa: E402


def main(argv=None) -> dict:
    from musiclime import LyricsFactorization
    from musiclime.library import track_specs, write_lyrics
    from musiclime.models import TransformerLyricsEncoder
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--masks", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args(argv)
    enc = TransformerLyricsEncoder()
    lf = LyricsFactorization(write_lyrics(track_specs(1, 0)[0]))
    masks = np.random.default_rng(0).integers(0, 2, size=(args.masks, lf.n_features)).astype(np.uint8)
    res = {}
    with torch.inference_mode():
        for name, fn in (("retokenize", lambda m: enc(lf.compose(m))), ("mask_tokens", lambda m: enc.embed_masks(lf, m))):
            fn(masks[:args.batch])
            t0 = time.perf_counter()
            outs = []
            for i in range(0, len(masks), args.batch):
                outs.append(fn(masks[i:i + args.batch]))
            res[name] = {"seconds": time.perf_counter() - t0}
            res[name]["emb"] = torch.cat(outs)
        # tokenization alone (what the mask path saves)
        t0 = time.perf_counter()
        for i in range(0, len(masks), args.batch):
            enc.tokenizer(lf.compose(masks[i:i + args.batch]), padding=True, truncation=True, max_length=128)
        tok_retok = time.perf_counter() - t0
        t0 = time.perf_counter()
        enc.token_words(lf)
        tok_once = time.perf_counter() - t0
    diff = float((res["retokenize"]["emb"] - res["mask_tokens"]["emb"]).abs().max())
    result = {"masks": args.masks, "n_words": lf.n_features, "batch": args.batch,
              "seconds": {k: v["seconds"] for k, v in res.items()},
              "speedup": res["retokenize"]["seconds"] / res["mask_tokens"]["seconds"],
              "tokenize_seconds": {"retokenize_every_mask": tok_retok, "mask_path_once": tok_once},
              "max_abs_embedding_difference": diff}
    print(result)
    print("wrote", write_result("lyrics_masks", result))
    return result


if __name__ == "__main__":
    main()
