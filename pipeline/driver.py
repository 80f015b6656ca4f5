"""The explain job's driver: catalogue in, explanations out, exactly once.

Decode and the surrogate fits run as CPU tasks (wherever the cluster has a free CPU, new
nodes included); the GPU stage (PredictorActors, one per device or fraction of one, a pool
that grows with the cluster) separates (demucs) and explains each track on its device;
ObjectRefs flow stage to stage so the driver never holds audio. At most ``in_flight`` tracks are in the pipeline at once
(backpressure); the single writer commits finished tracks atomically.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, replace

from pipeline import logs
from pipeline.catalogue import CatalogueError, CatalogueReader, ContentKeys
from pipeline.config import ExplainConfig, check_run_id, settings_diff
from pipeline.exits import EXIT_FATAL, EXIT_OK, EXIT_SOME_ERRORS, EXIT_USAGE
from pipeline.lease import LeaseHeld, LeaseLost
from pipeline.lease_base import OutputLease
from pipeline.placement import is_local, placement_problems, window_cost
from pipeline.run_record import RunRecord
from pipeline.signals import interrupts_as_keyboard_interrupt


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
    unchanged: int = 0      # of skipped: unchanged since an earlier night (--incremental)
    format: str = ""
    computed: int = 0
    model_rows: int = 0
    window_rows: int = 0    # model rows x windows (--window whole hears each mask in several)
    seconds: float = 0.0
    message: str = ""
    errors: list = field(default_factory=list)
    actors: list = field(default_factory=list)     # PredictorActor.info() at the end
    driver_peak_rss_mb: float = 0.0
    skipped_files: dict = field(default_factory=dict)  # a folder catalogue's files left out, by kind


def run_explain(cfg: ExplainConfig, log=None, show_progress: bool = True) -> RunSummary:
    """Run (or resume) an explain job; returns its summary with the exit code.

    Exit codes: 0 every row explained, 3 some rows in ``errors``, 2 usage (bad options or
    catalogue, a resume with other settings, the output held by another driver), 1 fatal
    or interrupted (the run resumes with the same ``--run-id``).
    """
    from musiclime.models.registry import musiclime_home
    log = log or logs.get("explain").info
    t0 = time.perf_counter()
    invocation_id = uuid.uuid4().hex[:12]
    try:
        run_id = check_run_id(cfg.run_id or time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6])
        reader = CatalogueReader(cfg.catalogue, limit=cfg.limit)
        label_column = cfg.label_column
        if cfg.labels == "true" and not label_column:
            label_column = next((c for c in ("genre", "emotion", "label") if c in reader.columns), None)
            if label_column is None:
                raise UsageError("--labels true needs --label-column (no genre/emotion/label column found)")
    except (CatalogueError, ValueError) as e:
        return RunSummary(cfg.run_id or "", EXIT_USAGE, message=str(e))
    cfg = replace(cfg, run_id=run_id, label_column=label_column,
                  stem_cache=cfg.stem_cache or str(musiclime_home() / "stems"))
    try:
        cfg = resolve_model(cfg, log)
    except (ValueError, FileNotFoundError) as e:
        return RunSummary(run_id, EXIT_USAGE, message=str(e))
    from musiclime import storage
    from pipeline.lease import make_lease
    from pipeline.output import resolve_format, resolve_iceberg
    try:
        lease = make_lease(cfg.out, run_id, stale_after=cfg.lease_timeout)  # first: a refused store is never read
        storage.makedirs(cfg.out)
        fmt = resolve_format(cfg.out, cfg.format)
        iceberg = resolve_iceberg(cfg.out, cfg.iceberg_catalog, cfg.iceberg_namespace) if fmt == "iceberg" else None
    except ValueError as e:
        return RunSummary(run_id, EXIT_USAGE, message=str(e))
    if cfg.incremental:  # a standing output keeps the sampling it was made with, unless told otherwise
        from pipeline.output import runs
        earlier = [d["settings"] for d in runs(cfg.out) if d.get("settings") and d["run_id"] != run_id]
        cfg = cfg.keep_sampling(earlier[-1] if earlier else {})
    record = RunRecord(cfg.out, run_id, cfg, invocation_id, fmt, iceberg)
    diff = settings_diff(record.previous.get("settings", {}), cfg.settings())
    if diff:
        return RunSummary(run_id, EXIT_USAGE, message=_resume_refused(run_id, diff))
    try:
        lease.acquire()
    except LeaseHeld as e:
        return RunSummary(run_id, EXIT_USAGE, message=str(e))
    try:
        with interrupts_as_keyboard_interrupt():
            return _run_locked(cfg, reader, record, lease, invocation_id, log, show_progress, t0)
    except KeyboardInterrupt:  # before any work was under way (planning, starting Ray)
        return RunSummary(run_id, EXIT_FATAL, message="interrupted before any commit; rerun the same command")
    finally:
        lease.release()


def resolve_model(cfg: ExplainConfig, log) -> ExplainConfig:
    """``--model`` resolved once, before Ray (see :mod:`musiclime.models.registry`): actors
    load the pinned location (a hub revision as its commit); a classifier of one modality
    implies ``--modality`` and caps the window at what it sees."""
    from musiclime.models.registry import resolve
    ref = resolve(cfg.model)
    modality = cfg.modality
    if ref.modality and modality != ref.modality:
        if modality != "both":
            raise ValueError(f"--model {cfg.model} is a {ref.kind} and explains {ref.modality} alone: "
                             f"--modality {modality} is not possible")
        log(f"--model {cfg.model} is a {ref.kind}: explained on {ref.modality} alone, "
            f"{'lyrics' if ref.modality == 'audio' else 'audio'} ignored")
        modality = ref.modality
    # a text classifier never hears the audio: the tracks' audio is neither read nor separated
    return replace(cfg, model=ref.location, modality=modality, model_window=ref.max_seconds,
                   audio_used=ref.modality != "lyrics")


def _resume_refused(run_id: str, diff: list[str]) -> str:
    return (f"run {run_id} was started with other settings; resuming it would mix explanations that cannot "
            f"be compared. Use a new --run-id, or the old settings:\n  " + "\n  ".join(diff))


def _start_job(cfg: ExplainConfig, record: RunRecord, invocation_id: str, log, summary: RunSummary):
    """Ray, the placement check and the GPU-stage pool; the model's hash into the run's
    record (written by the caller). None (with the summary's exit code and message set)
    when the run must not go on: a refused run has written nothing; a model that does not
    load is a fatal, resumable failure, recorded as such."""
    if not is_local(cfg):
        from pipeline.ray_runtime import init_ray
        init_ray(cfg.address)
    problems = placement_problems(cfg)
    if problems:
        summary.exit_code, summary.message = EXIT_USAGE, "this plan can never be placed:\n  " + "\n  ".join(problems)
        return None
    from pipeline.engine.pool import PredictorPool
    try:
        job = PredictorPool(cfg, invocation_id, log)
    except Exception as e:  # the model does not load: the run can be resumed once it does
        summary.exit_code, summary.message = EXIT_FATAL, f"fatal: {type(e).__name__}: {e}"
        record.write("failed")
        log(summary.message)
        return None
    diff = settings_diff(record.previous.get("settings", {}), cfg.settings(job.info["model_id"]))
    if diff:  # the model changed under the same run id: refuse before any commit
        summary.exit_code, summary.message = EXIT_USAGE, _resume_refused(record.run_id, diff)
        return None
    unknown = cfg.label_rule().unknown(job.info["classes"])
    if unknown:  # --labels choir,strings on a model without those classes: refused before any commit
        summary.exit_code = EXIT_USAGE
        summary.message = f"--labels names {unknown}, not classes of the model: {job.info['classes']}"
        return None
    record.model = {k: job.info[k] for k in ("classes", "model_id", "sample_rate")}
    return job



def _run_locked(cfg: ExplainConfig, reader: CatalogueReader, record: RunRecord, lease: OutputLease, invocation_id: str,
                log, show_progress: bool, t0: float) -> RunSummary:
    from pipeline.output import open_writer
    summary = RunSummary(record.run_id, EXIT_FATAL, format=record.format)
    job = None
    # A resume must load the same model (its hash is known once a predictor has loaded it),
    # and an incremental night looks earlier nights up under the model's hash: both start
    # the pool first, so that a refused run has written nothing, run.json included.
    if cfg.incremental or record.previous.get("model_id"):
        job = _start_job(cfg, record, invocation_id, log, summary)
        if job is None:
            return summary
    writer = open_writer(record.format, cfg.out, record.run_id, invocation_id, cfg.commit_every, lease=lease,
                         iceberg=record.iceberg)
    rolled = writer.recover()
    if rolled:
        log(f"recovered {rolled} committed batch(es) of an interrupted writer")
    if cfg.retry_errors:
        writer.drop_errors()
    found = _worklist(cfg, reader, record, writer, log)
    if isinstance(found, RunSummary):
        return found
    work, keys_of = found
    summary.total, summary.skipped, summary.unchanged = work.n_rows, work.n_done, work.n_unchanged
    if cfg.window == "whole":
        log(window_cost(cfg))
    if reader.skipped is not None:
        summary.skipped_files = record.skipped_files = reader.skipped.as_dict()
        if reader.skipped.total:
            log(f"catalogue {cfg.catalogue}: {reader.skipped.describe()}")
    if work.n_work and job is None:
        job = _start_job(cfg, record, invocation_id, log, summary)
        if job is None:
            return summary
    record.write("running", work.n_rows)
    return _execute(cfg, reader, record, job, writer, work, keys_of, summary, log, show_progress, t0)


def _worklist(cfg: ExplainConfig, reader: CatalogueReader, record: RunRecord, writer, log):
    """The worklist (what is done, unchanged or to do) and the run's content keys, or the
    usage error's summary."""
    from pipeline.output import MembersWriter, history
    from pipeline.worklist import make_worklist
    run_id = record.run_id
    done_before = None
    if cfg.incremental:
        done_before = history(cfg.out, record.format, record.config_hash() or "", run_id,
                              with_errors=not cfg.retry_errors)
    members = MembersWriter(cfg.out, record.format, run_id, record.iceberg)
    from musiclime.listing import Listings
    keys_of = ContentKeys(cfg.label_column, cfg.audio_used, Listings())
    try:
        work = make_worklist(reader, writer, history=done_before, members=members, keys_of=keys_of)
        members.close()
    except CatalogueError as e:
        return RunSummary(run_id, EXIT_USAGE, message=str(e), format=record.format)
    if work.n_unchanged:
        log(f"run {run_id}: {work.n_unchanged} of {work.n_rows} rows unchanged since an earlier night")
    if work.n_done > work.n_unchanged:
        log(f"run {run_id}: {work.n_done - work.n_unchanged} of {work.n_rows} rows already committed, "
            f"{work.n_work} to do")
    return work, keys_of


def _execute(cfg: ExplainConfig, reader: CatalogueReader, record: RunRecord, job, writer, work, keys_of,
             summary: RunSummary, log, show_progress: bool, t0: float) -> RunSummary:
    """Drive the rows through the pool and commit; the summary with its exit code."""
    from pipeline.engine.loop import drive
    from pipeline.progress import Progress
    from pipeline.worklist import rows_to_do
    try:
        bar = Progress(work.n_work, "tracks", status_every=cfg.status_every) if show_progress else None
        drive(job, cfg, rows_to_do(reader, work, keys_of), writer, summary, bar)
        if job is not None:
            summary.actors = job.actor_infos()
            for a in summary.actors:
                log(f"GPU-stage actor pid {a['pid']} on node {a['node_name']} ({a.get('node_id', '')}): "
                    f"{a['tracks_done']} tracks, busy {a.get('busy_share', 0.0):.0%}")
        writer.commit()
    except KeyboardInterrupt:  # SIGINT, or SIGTERM from `ray job stop` / an eviction (see the CLI)
        _commit_quietly(writer, log)
        summary.message = (f"interrupted: what was complete is committed; rerun the same command "
                           f"(--run-id {cfg.run_id}) to finish")
        return _end(summary, record, work, writer, "interrupted", log)
    except LeaseLost as e:  # another driver took the output over: commit nothing more
        summary.exit_code, summary.message = EXIT_FATAL, f"fatal: {e}"
        log(summary.message)
        return summary
    except Exception as e:  # fatal: the run can be resumed with the same --run-id
        _commit_quietly(writer, log)
        summary.message = f"fatal: {type(e).__name__}: {e}"
        return _end(summary, record, work, writer, "failed", log)
    summary.seconds = time.perf_counter() - t0
    import resource
    summary.driver_peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return _end(summary, record, work, writer, None, log)


def _end(summary: RunSummary, record: RunRecord, work, writer, status: str | None, log) -> RunSummary:
    """Count what the tables hold and record the run's status: ``status`` when it stopped
    early (exit 1), else finished or failed by what was committed."""
    from pipeline.worklist import outcome
    if status == "failed":  # the tables may be what failed: count nothing more
        summary.exit_code = EXIT_FATAL
        log(summary.message)
        record.write(status, work.n_rows)
        return summary
    result = outcome(work, writer)
    summary.explained, summary.failed = result.explained, result.failed
    if status is not None:
        summary.exit_code = EXIT_FATAL
        log(summary.message)
    elif result.unaccounted:
        summary.exit_code, summary.message = EXIT_FATAL, f"{result.unaccounted} rows unaccounted for"
    else:
        summary.exit_code = EXIT_OK if not result.failed else EXIT_SOME_ERRORS
    if status is None:
        status = "finished" if summary.exit_code in (EXIT_OK, EXIT_SOME_ERRORS) else "failed"
    record.write(status, work.n_rows)
    return summary


def _commit_quietly(writer, log) -> None:
    """Commit what is complete on the way out; a failure here is logged, not raised (the
    buffer is then recomputed by the rerun, never half-written)."""
    try:
        writer.commit()
    except Exception as e:
        log(f"could not commit the last batch ({type(e).__name__}: {e}); the rerun recomputes it")
