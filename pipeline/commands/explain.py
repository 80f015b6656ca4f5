"""``musiclime explain``: explain a whole catalogue on Ray."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pipeline.config import add_arguments as add_options
    add_options(p)  # every option of the run, declared once in pipeline.config
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (stages, actors, CPUs/GPUs each, rows to do and already committed) "
                        "and exit: 0, or 2 when it can never be placed")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    import sys

    from musiclime.install_check import BrokenInstallError, check_torch_pair
    try:
        check_torch_pair()
    except BrokenInstallError as e:
        print(f"musiclime explain: broken install: {e}", file=sys.stderr)
        return 1
    from pipeline.config import from_arguments
    from pipeline.driver import run_explain
    try:
        cfg = from_arguments(args)
    except ValueError as e:  # checked before anything is read or started
        print(f"musiclime explain: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        from pipeline.placement import dry_run
        code, text = dry_run(cfg)
        print(text, file=sys.stdout if code == 0 else sys.stderr)
        return code
    # SIGTERM (ray job stop, a pod eviction) and Ctrl-C: run_explain commits what is
    # complete, releases the lease and returns exit 1; the rerun finishes the run.
    s = run_explain(cfg, show_progress=not args.no_progress)
    return _report(s, args)


def _report(s, args: argparse.Namespace) -> int:
    import sys
    from collections import Counter
    if s.exit_code == 2:
        print(f"musiclime explain: {s.message}", file=sys.stderr)
        return 2
    unchanged = f", {s.unchanged} unchanged since an earlier night" if s.unchanged else ""
    print(f"run {s.run_id}: {s.explained} explained, {s.failed} in errors ({s.computed} computed now, "
          f"{s.skipped - s.unchanged} already committed{unchanged}); {s.model_rows} model rows in {s.seconds:.0f}s")
    if s.skipped_files:
        from pipeline.folder import Skipped
        print(f"catalogue folder: {Skipped(Counter(s.skipped_files)).describe()}")
    for e in s.errors[:20]:
        print(f"  {e.track_id or '#' + str(e.catalogue_row)} [{e.stage}] {e.error_type}: {e.message}")
    out = args.out.rstrip("/")
    print(f"tables ({s.format}): {out}/tracks, {out}/explanations, {out}/errors; run record {out}/run.json")
    if s.message and s.exit_code == 1:
        print(s.message)
    return s.exit_code
