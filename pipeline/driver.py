"""The explain job's driver: catalogue in, explanations out, exactly once.

Decode runs as CPU tasks, separation (demucs) in a SeparatorActor, prediction in
PredictorActors, surrogate fits in SurrogateActors; ObjectRefs flow stage to stage so the
driver never holds audio. At most ``in_flight`` tracks are in the pipeline at once
(backpressure); the single writer commits finished tracks atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline.catalogue import CatalogueError, read_catalogue
from pipeline.config import ExplainConfig, check_run_id
from pipeline.stages import ErrorRecord, TrackResult
from pipeline.writer import RunWriter

EXIT_OK, EXIT_FATAL, EXIT_USAGE, EXIT_SOME_ERRORS = 0, 1, 2, 3


class UsageError(ValueError):
    """Bad arguments or catalogue: exit code 2."""


@dataclass
class RunSummary:
    run_id: str
    exit_code: int
    total: int = 0
    explained: int = 0
    failed: int = 0
    skipped: int = 0
    computed: int = 0
    model_rows: int = 0
    seconds: float = 0.0
    message: str = ""
    errors: list = field(default_factory=list)
    actors: list = field(default_factory=list)     # PredictorActor.info() at the end
    driver_peak_rss_mb: float = 0.0


def catalogue_hash(path: str | Path) -> str:
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for f in sorted(p.rglob("*")):
            if f.is_file():
                h.update(str(f.relative_to(p)).encode())
                h.update(str(f.stat().st_size).encode())
    else:
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for pkg in ("musiclime", "torch", "torchaudio", "transformers", "ray", "pyarrow", "numpy", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def validate_rows(rows: list[dict], invocation_id: str) -> tuple[list[dict], list[ErrorRecord]]:
    """First row of each track id is explained; later duplicates and rows without an id
    become error records."""
    seen, ok, bad = set(), [], []
    for r in rows:
        tid = r.get("track_id")
        if tid is None or str(tid) == "":
            bad.append(ErrorRecord("", r["catalogue_row"], "validate", "missing_track_id",
                                   f"catalogue row {r['catalogue_row']} has no track_id"))
        elif tid in seen:
            bad.append(ErrorRecord(tid, r["catalogue_row"], "validate", "duplicate_track_id",
                                   f"track {tid!r} (row {r['catalogue_row']}) repeats an earlier row; the first is explained"))
        else:
            seen.add(tid)
            ok.append(r)
    return ok, bad


def _stage_of(err: Exception) -> str:
    name = getattr(err, "function_name", "") or ""
    text = f"{name} {err}"
    for stage, key in (("decode", "decode"), ("separate", "SeparatorActor"), ("predict", "PredictorActor"),
                       ("fit", "SurrogateActor")):
        if key in text:
            return stage
    return "predict"


class _Job:
    """The Ray side of one invocation."""

    def __init__(self, cfg: ExplainConfig, invocation_id: str, log):
        import ray

        from actors import PredictorActor, SeparatorActor, SurrogateActor
        from pipeline import stages
        from pipeline.ray_runtime import init_ray
        self.ray, self.cfg, self.log = ray, cfg, log
        init_ray(cfg.address)
        gpu = cfg.gpus_per_predictor > 0
        threads = max(1, (os.cpu_count() or 2) // max(1, cfg.predictors))
        # Restarts rerun __init__ (the model loads from its path again); in-flight calls are retried.
        predictor_opts = dict(num_cpus=0.5 if not gpu else 1, num_gpus=cfg.gpus_per_predictor, max_restarts=2,
                              max_task_retries=2, runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads),
                                                                            "MKL_NUM_THREADS": str(threads)}})
        self.predictors = [ray.remote(PredictorActor).options(
            name=f"musiclime-predictor-{invocation_id}-{i}", **predictor_opts).remote(
            cfg.model, cfg.num_samples, cfg.modality, cfg.segments, cfg.batch_size, "cuda" if gpu else "cpu",
            cfg.design, cfg.labels, cfg.label_column)
            for i in range(cfg.predictors)]
        self.surrogates = [ray.remote(SurrogateActor).options(num_cpus=0.25, max_restarts=2, max_task_retries=2)
                           .remote(cfg, invocation_id) for _ in range(max(1, cfg.surrogate_workers))]
        self.separator = None
        if cfg.separator == "demucs":
            options = {"model_name": cfg.demucs_model, "repo": cfg.demucs_repo, "allow_pickle": cfg.trust_pickle}
            self.separator = ray.remote(SeparatorActor).options(
                num_cpus=0.5, num_gpus=min(cfg.gpus_per_predictor, 1.0), max_restarts=2, max_task_retries=2
            ).remote("demucs", options, cfg.stem_cache)
        self.decode_task = ray.remote(num_cpus=0.25, max_retries=2)(stages.decode)
        self.info = ray.get(self.predictors[0].info.remote())  # fails fast if the model does not load
        self.load = [0] * len(self.predictors)
        self.cfg_ref = ray.put(cfg)

    def submit(self, row: dict):
        """Chain the stages for one row; returns (final ref, predictor index)."""
        i = min(range(len(self.predictors)), key=self.load.__getitem__)  # least-loaded predictor
        self.load[i] += 1
        ref = self.decode_task.remote(row, self.cfg_ref, self.info["sample_rate"])
        if self.separator is not None:
            ref = self.separator.separate.remote(ref)
        ref = self.predictors[i].predict.remote(ref)
        ref = self.surrogates[row["catalogue_row"] % len(self.surrogates)].fit.remote(ref)
        return ref, i


def run_explain(cfg: ExplainConfig, log=None, show_progress: bool = True) -> RunSummary:
    """Run (or resume) an explain job; returns its summary with the exit code."""
    from musiclime.models.registry import musiclime_home
    from pipeline.progress import Progress
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    invocation_id = uuid.uuid4().hex[:12]
    try:
        run_id = check_run_id(cfg.run_id or time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6])
        if cfg.separator not in ("hpss", "demucs", "provided", "none"):
            raise UsageError(f"--separator must be hpss, demucs, provided or none, got {cfg.separator!r}")
        if cfg.labels not in ("top1", "true", "all"):
            raise UsageError(f"--labels must be top1, true or all, got {cfg.labels!r}")
        rows = read_catalogue(cfg.catalogue)
        label_column = cfg.label_column
        if cfg.labels == "true" and not label_column:
            label_column = next((c for c in ("genre", "emotion", "label") if rows and c in rows[0]), None)
            if label_column is None:
                raise UsageError("--labels true needs --label-column (no genre/emotion/label column found)")
    except (CatalogueError, ValueError) as e:
        return RunSummary(cfg.run_id or "", EXIT_USAGE, message=str(e))
    cfg = replace(cfg, run_id=run_id, label_column=label_column,
                  stem_cache=cfg.stem_cache or str(musiclime_home() / "stems"))
    if cfg.limit is not None:
        rows = rows[:cfg.limit]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cat_hash = catalogue_hash(cfg.catalogue)
    manifest = out / "runs" / f"{run_id}.json"
    if manifest.is_file():
        prev = json.loads(manifest.read_text())
        if prev.get("catalogue_hash") != cat_hash:
            return RunSummary(run_id, EXIT_USAGE, message=f"run {run_id} was started on another catalogue "
                                                           f"(hash differs); use a new --run-id")
    writer = RunWriter(out, run_id, invocation_id, cfg.commit_every)
    rolled = writer.recover()
    ok_rows, err_rows = writer.committed()
    if cfg.retry_errors and err_rows:
        writer.drop_error_rows(set(err_rows))
        err_rows = {}
    done = ok_rows | set(err_rows)
    valid, invalid = validate_rows(rows, invocation_id)
    for rec in invalid:
        if rec.catalogue_row not in done:
            writer.add_error(rec.row(invocation_id))
    pending = [r for r in valid if r["catalogue_row"] not in done]
    summary = RunSummary(run_id, EXIT_FATAL, total=len(rows), skipped=len(done))
    if rolled:
        log(f"recovered {rolled} committed batch(es) of an interrupted writer")
    if done:
        log(f"run {run_id}: {len(done)} of {len(rows)} rows already committed, {len(pending)} to do")

    def write_manifest(status: str, classes=None, model_id=None, sample_rate=None):
        doc = {"run_id": run_id, "status": status, "config": cfg.to_json(), "seed": cfg.seed,
               "classes": classes, "model_id": model_id, "sample_rate": sample_rate, "catalogue_hash": cat_hash, "versions": versions(),
               "invocation_id": invocation_id, "rows": len(rows), "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if manifest.is_file():
            old = json.loads(manifest.read_text())
            doc["classes"] = doc["classes"] or old.get("classes")
            doc["model_id"] = doc["model_id"] or old.get("model_id")
            doc["sample_rate"] = doc["sample_rate"] or old.get("sample_rate")
            doc["invocations"] = old.get("invocations", []) + [invocation_id]
        else:
            doc["invocations"] = [invocation_id]
        manifest.parent.mkdir(parents=True, exist_ok=True)
        for path in (manifest, out / "run.json"):
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps(doc, indent=2, default=str))
            os.replace(tmp, path)

    write_manifest("running")
    try:
        if pending:
            job = _Job(cfg, invocation_id, log)
            write_manifest("running", job.info["classes"], job.info["model_id"], job.info["sample_rate"])
            _drive(job, cfg, pending, writer, summary, Progress(len(pending), "tracks") if show_progress else None)
            summary.actors = job.ray.get([p.info.remote() for p in job.predictors])
        writer.commit()
    except KeyboardInterrupt:
        writer.commit()
        raise
    except Exception as e:  # fatal: the run can be resumed with the same --run-id
        writer.commit()
        summary.message = f"fatal: {type(e).__name__}: {e}"
        summary.exit_code = EXIT_FATAL
        write_manifest("failed")
        log(summary.message)
        return summary
    ok_rows, err_rows = writer.committed()
    summary.explained, summary.failed = len(ok_rows), len(err_rows)
    accounted = ok_rows | set(err_rows)
    all_rows = {r["catalogue_row"] for r in rows}
    if not all_rows <= accounted:
        summary.exit_code, summary.message = EXIT_FATAL, f"{len(all_rows - accounted)} rows unaccounted for"
    else:
        summary.exit_code = EXIT_OK if all_rows <= ok_rows else EXIT_SOME_ERRORS
    summary.seconds = time.perf_counter() - t0
    import resource
    summary.driver_peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    write_manifest("finished" if summary.exit_code in (EXIT_OK, EXIT_SOME_ERRORS) else "failed")
    return summary


def _drive(job: _Job, cfg: ExplainConfig, pending: list[dict], writer: RunWriter, summary: RunSummary, bar) -> None:
    ray = job.ray
    queue = list(reversed(pending))
    inflight: dict = {}     # ref -> (row, attempt, predictor index)
    t0 = time.perf_counter()
    ok = failed = 0
    while queue or inflight:
        while queue and len(inflight) < cfg.in_flight:
            row = queue.pop()
            ref, i = job.submit(row)
            inflight[ref] = (row, 1, i)
        ready, _ = ray.wait(list(inflight), num_returns=1)
        ref = ready[0]
        row, attempt, i = inflight.pop(ref)
        job.load[i] -= 1
        try:
            res = ray.get(ref)
        except Exception as e:  # actor died for good, a bug, a worker crash: retry, then record
            if attempt < cfg.max_attempts:
                new_ref, j = job.submit(row)
                inflight[new_ref] = (row, attempt + 1, j)
                continue
            res = ErrorRecord(row["track_id"], row["catalogue_row"], _stage_of(e), type(e).__name__,
                              f"track {row['track_id']!r} failed {attempt} times: {str(e).splitlines()[0][:500]}",
                              attempt)
        if isinstance(res, TrackResult):
            writer.add_track(res.track, res.explanations)
            summary.model_rows += res.model_rows
            summary.computed += 1
            ok += 1
        else:
            writer.add_error(res.row(writer.invocation_id))
            summary.errors.append(res)
            failed += 1
        writer.maybe_commit()
        if bar:
            rate = summary.model_rows / max(time.perf_counter() - t0, 1e-9)
            bar.update(ok, failed, extra=f"{rate:.0f} masks/s")
    if bar:
        bar.close()
