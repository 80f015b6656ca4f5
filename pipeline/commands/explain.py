"""``musiclime explain``: explain a whole catalogue on Ray."""
from __future__ import annotations

import argparse


def num_samples(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int or 'auto', got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("catalogue", help="Parquet, CSV, JSONL, or a folder of audio files with sidecar .txt lyrics")
    p.add_argument("--model", default="default",
                   help="default | default:emotion | a folder (musiclime checkpoint, or a Hugging Face audio or "
                        "text classifier saved with save_pretrained: its config.json says which) | "
                        "hf:ORG/NAME[@REVISION] (Hugging Face hub; offline: from the HF cache) | "
                        "package.module:factory (a plugin)")
    p.add_argument("--out", required=True,
                   help="output folder or URI (s3://bucket/prefix): tables partitioned by run_id=")
    p.add_argument("--format", default="auto", choices=["auto", "parquet", "delta"],
                   help="output tables: parquet (files committed by rename: local and NFS paths), delta (Delta "
                        "tables committed with transaction ids: object stores), or auto: delta on object stores, "
                        "else parquet. A standing output keeps its format")
    p.add_argument("--incremental", action="store_true",
                   help="--out is a standing output that nights add to: explain only rows whose content key "
                        "(track_id + checksum column, or size/mtime of its files, + inline lyrics) has no "
                        "explanation under the same model and config; earlier errors only with --retry-errors")
    p.add_argument("--separator", default="hpss", choices=["demucs", "provided", "hpss", "none"])
    from musiclime.designs import CHOICES as DESIGN_CHOICES
    p.add_argument("--num-samples", type=num_samples, default=1000,
                   help="perturbations per track, or 'auto': sample in rounds until every explained label's "
                        "top-10 is separated from the rest with 95%% confidence (or tied), at most the design's cap")
    p.add_argument("--design", default="auto", choices=DESIGN_CHOICES,
                   help="mask design: iid (the reference's exactly), foldover, grid, orthogonal (folded "
                        "orthogonal arrays), orthogonal-grid (late fusion: audio x lyrics orthogonal "
                        "half-masks); auto: with --num-samples auto orthogonal-grid on a late-fusion model, "
                        "orthogonal otherwise; with a fixed count foldover")
    p.add_argument("--target", default="auto", choices=["auto", "probability", "log_odds"],
                   help="what the surrogate fits: the class probability (the reference's) or its log-odds "
                        "(for confident models); auto: log_odds, but probability under --design iid (the paper's "
                        "setting; README 'Targets')")
    p.add_argument("--segments", type=int, default=10, help="temporal segments per track")
    p.add_argument("--labels", default="top1", choices=["top1", "true", "all"], help="which classes to explain")
    p.add_argument("--label-column", default=None, help="catalogue column with the true label")
    p.add_argument("--modality", default="both", choices=["both", "audio", "lyrics"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-id", default=None, help="name of the run; rerun with the same id to resume")
    p.add_argument("--address", default="local", help="local (a private Ray), auto, or ray://host:port")
    p.add_argument("--predictors", default="1",
                   help="GPU-stage actors: N, MIN:MAX (an elastic pool: MIN must fit, more start as the "
                        "cluster grows), or auto (floor(cluster GPUs / --gpus-per-predictor), growing with "
                        "the cluster; without GPUs one per 4 CPUs)")
    p.add_argument("--gpus-per-predictor", type=float, default=0.0)
    p.add_argument("--surrogate-workers", type=int, default=1,
                   help="surrogate fits the plan must find CPU room for at once; fits are Ray tasks, so more "
                        "run on any free CPU (new nodes included)")
    p.add_argument("--limit", type=int, default=None, help="explain only the first N catalogue rows")
    p.add_argument("--max-seconds", type=float, default=30.0, help="longer audio: its middle window is explained")
    p.add_argument("--max-words", type=int, default=1000,
                   help="distinct lyric words explained per track; longer lyrics are truncated and flagged lyrics_truncated")
    p.add_argument("--stem-cache", default=None, help="stem cache directory (default $MUSICLIME_HOME/stems)")
    p.add_argument("--demucs-model", default="htdemucs")
    p.add_argument("--demucs-repo", default=None, help="folder with demucs weights (see README)")
    p.add_argument("--trust-pickle", action="store_true", help="allow a legacy demucs .th pickle")
    p.add_argument("--batch-size", default="auto", help="rows per model call: auto or an int")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="model forward passes on a GPU: autocast to bf16 (auto, where the GPU has it, else "
                        "fp16) or fp16, or fp32; CPUs always run fp32")
    p.add_argument("--feature-selection", default="auto",
                   choices=["auto", "none", "forward_selection", "highest_weights", "lasso_path"])
    p.add_argument("--num-features", type=int, default=None, help="features kept per label (default: all)")
    p.add_argument("--kernel-width", type=float, default=25.0, help="LIME kernel width on cosine distances")
    p.add_argument("--commit-every", type=int, default=64, help="tracks per committed Parquet file")
    p.add_argument("--retry-errors", action="store_true",
                   help="on resume, retry rows recorded in errors (with --incremental: also earlier nights' errors)")
    p.add_argument("--max-attempts", type=int, default=3, help="tries per track before it goes to errors")
    p.add_argument("--tracks-in-flight", type=int, default=None, help="backpressure bound (default 2 per predictor + 2)")
    p.add_argument("--lease-timeout", type=float, default=60.0,
                   help="seconds without a heartbeat after which another driver may take the output over")
    p.add_argument("--stall-timeout", type=float, default=1800.0,
                   help="seconds a predictor may hold tracks without finishing one before it is replaced and its "
                        "tracks retried; a track that stalls twice is recorded as timeout")
    p.add_argument("--status-every", type=float, default=30.0,
                   help="seconds between status lines when stderr is not a terminal (job logs)")
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
    from pipeline.driver import run_explain
    try:
        batch = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    except ValueError:
        print(f"musiclime explain: --batch-size must be an int or 'auto', got {args.batch_size!r}", file=sys.stderr)
        return 2
    try:
        cfg = _config(args, batch)
    except ValueError as e:  # checked before anything is read or started
        print(f"musiclime explain: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        from pipeline.driver import dry_run
        code, text = dry_run(cfg)
        print(text, file=sys.stdout if code == 0 else sys.stderr)
        return code
    # SIGTERM (ray job stop, a pod eviction) and Ctrl-C: run_explain commits what is
    # complete, releases the lease and returns exit 1; the rerun finishes the run.
    s = run_explain(cfg, show_progress=not args.no_progress)
    return _report(s, args)


def _config(args: argparse.Namespace, batch):
    from pipeline.config import ExplainConfig
    return ExplainConfig(
        catalogue=args.catalogue, model=args.model, out=args.out, separator=args.separator,
        num_samples=args.num_samples, design=args.design, target=args.target, segments=args.segments, labels=args.labels,
        label_column=args.label_column,
        modality=args.modality, seed=args.seed, run_id=args.run_id, address=args.address,
        predictors=int(args.predictors) if args.predictors.strip().isdigit() else args.predictors, gpus_per_predictor=args.gpus_per_predictor,
        surrogate_workers=args.surrogate_workers, limit=args.limit, max_seconds=args.max_seconds, max_words=args.max_words,
        stem_cache=args.stem_cache, demucs_model=args.demucs_model, demucs_repo=args.demucs_repo,
        trust_pickle=args.trust_pickle, batch_size=batch, feature_selection=args.feature_selection, kernel_width=args.kernel_width,
        num_features=args.num_features, commit_every=args.commit_every, retry_errors=args.retry_errors,
        max_attempts=args.max_attempts, tracks_in_flight=args.tracks_in_flight,
        lease_timeout=args.lease_timeout, status_every=args.status_every,
        stall_timeout=args.stall_timeout, format=args.format, incremental=args.incremental,
        precision=args.precision)


def _report(s, args: argparse.Namespace) -> int:
    import sys
    if s.exit_code == 2:
        print(f"musiclime explain: {s.message}", file=sys.stderr)
        return 2
    unchanged = f", {s.unchanged} unchanged since an earlier night" if s.unchanged else ""
    print(f"run {s.run_id}: {s.explained} explained, {s.failed} in errors ({s.computed} computed now, "
          f"{s.skipped - s.unchanged} already committed{unchanged}); {s.model_rows} model rows in {s.seconds:.0f}s")
    for e in s.errors[:20]:
        print(f"  {e.track_id or '#' + str(e.catalogue_row)} [{e.stage}] {e.error_type}: {e.message}")
    out = args.out.rstrip("/")
    print(f"tables ({s.format}): {out}/tracks, {out}/explanations, {out}/errors; manifest {out}/run.json")
    if s.message and s.exit_code == 1:
        print(s.message)
    return s.exit_code
