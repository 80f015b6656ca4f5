"""The ``musiclime`` command. Sub-commands import their heavy dependencies only when run,
so ``musiclime --help`` answers at once."""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module with add_arguments(parser) and run(args) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("pipeline.commands.demo", "build the offline demo library and explain it end to end"),
    "explain": ("pipeline.commands.explain", "explain a whole catalogue on Ray (tracks, explanations, errors)"),
    "aggregate": ("pipeline.commands.aggregate", "global importances per class (Polars) -> global_importance/"),
    "report": ("pipeline.commands.report", "a self-contained report.html (catalogue and track views)"),
    "serve": ("pipeline.commands.serve", "a local read-only web app: search any track, see and hear its explanation"),
    "library": ("pipeline.commands.library", "generate the offline demo library with planted evidence"),
    "train": ("pipeline.commands.train", "train the offline default model on a library"),
    "separate": ("pipeline.commands.separate", "separate a catalogue into the stem cache (hpss or demucs)"),
    "evaluate": ("pipeline.commands.evaluate", "held-out accuracy and macro-F1 of models (Parquet + Markdown)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="musiclime",
        description="Explain multimodal (audio + lyrics) music classifiers with MusicLIME, "
                    "whole catalogues at a time.")
    from musiclime import __version__
    from pipeline.logs import LogFormat, LogLevel
    parser.add_argument("--version", action="version", version=f"musiclime {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        _lazy_arguments(module, p)
        p.add_argument("--log-level", default="INFO", choices=[m.value for m in LogLevel])
        p.add_argument("--log-format", default="text", choices=[m.value for m in LogFormat],
                       help="json: one JSON object per line (for job logs)")
    return parser


def _lazy_arguments(module: str, parser: argparse.ArgumentParser) -> None:
    # Argument definitions live in light modules (pipeline.commands.*) that import nothing heavy.
    importlib.import_module(module).add_arguments(parser)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from pipeline.logs import configure
    configure(args.log_level, args.log_format)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
