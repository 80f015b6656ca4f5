"""``musiclime evaluate``: accuracy and macro-F1 of models on a library's held-out split."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--library", required=True, help="library directory or catalogue file")
    p.add_argument("--task", default="genre")
    p.add_argument("--model", action="append", required=True, dest="models",
                   help="model spec (repeatable), as for explain: default | a folder (musiclime checkpoint, Hugging "
                        "Face audio or text classifier) | hf:ORG/NAME[@REVISION] | package.module:factory")
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True, help="directory for evaluation.parquet and evaluation.md")


def run(args: argparse.Namespace) -> int:
    from musiclime.evaluation import evaluate_models
    table, md = evaluate_models(args.library, args.task, args.models, args.split, args.out)
    print(md)
    return 0
