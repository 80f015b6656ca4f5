"""``musiclime train``: train the offline default model on a library."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--library", required=True, help="library directory (with catalogue.parquet) or catalogue file")
    p.add_argument("--task", default="genre", help="label column: genre | emotion | any other")
    p.add_argument("--modality", default="both", choices=["both", "audio", "lyrics"])
    p.add_argument("--out", default=None, help="checkpoint directory (default: the 'default' model's place)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-rate", type=int, default=16000, help="Hz")


def run(args: argparse.Namespace) -> int:
    from musiclime.models.registry import default_checkpoint
    from musiclime.training import train_default
    out = args.out or default_checkpoint(args.task)
    path = train_default(args.library, args.task, args.modality, out, epochs=args.epochs, seed=args.seed,
                         sample_rate=args.sample_rate)
    print(f"checkpoint: {path}")
    return 0
