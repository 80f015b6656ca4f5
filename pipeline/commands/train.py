"""``musiclime train``: train the offline default model, or the paper-style fusion, on a library."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--library", required=True, help="library directory (with catalogue.parquet) or catalogue file")
    p.add_argument("--task", default="genre", help="label column: genre | emotion | any other")
    p.add_argument("--modality", default="both", choices=["both", "audio", "lyrics"])
    p.add_argument("--out", default=None, help="checkpoint directory (default: the 'default' model's place)")
    p.add_argument("--arch", default="default", choices=["default", "paper"],
                   help="default: log-mel CNN + MiniLM (offline, minutes on 2 cores); paper: AST + RoBERTa-style "
                        "encoders (--audio-encoder, --text-encoder) and a trained head")
    p.add_argument("--audio-encoder", default=None,
                   help="paper: an AST folder (save_pretrained) or hf:ORG/NAME[@REVISION]")
    p.add_argument("--text-encoder", default=None,
                   help="paper: a RoBERTa-style folder or hf:ORG/NAME[@REVISION]")
    p.add_argument("--unfreeze", type=int, default=0,
                   help="paper: train the last N layers of each encoder (0: frozen encoders, referenced by the "
                        "checkpoint with a hash of their weights; N > 0: stored in it)")
    p.add_argument("--epochs", type=int, default=None, help="default 30 (default arch), 10 (paper)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-rate", type=int, default=16000, help="Hz (default arch; paper: the extractor's)")
    p.add_argument("--limit", type=int, default=None, help="paper: at most N tracks per split (a quick check)")


def run(args: argparse.Namespace) -> int:
    import sys

    from musiclime.models.registry import default_checkpoint
    if args.arch == "paper":
        if not (args.audio_encoder and args.text_encoder and args.out):
            print("musiclime train --arch paper needs --audio-encoder, --text-encoder and --out", file=sys.stderr)
            return 2
        from musiclime.training import train_paper
        try:
            path = train_paper(args.library, args.task, args.audio_encoder, args.text_encoder, args.out,
                               unfreeze_audio=args.unfreeze, unfreeze_text=args.unfreeze, modality=args.modality,
                               epochs=args.epochs or 10, seed=args.seed, batch_size=args.batch_size, limit=args.limit)
        except (ValueError, FileNotFoundError) as e:
            print(f"musiclime train: {e}", file=sys.stderr)
            return 2
    else:
        from musiclime.training import train_default
        out = args.out or default_checkpoint(args.task)
        path = train_default(args.library, args.task, args.modality, out, epochs=args.epochs or 30, seed=args.seed,
                             sample_rate=args.sample_rate)
    print(f"checkpoint: {path}")
    return 0
