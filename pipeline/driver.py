"""The explain job's driver: catalogue in, explanations out, exactly once.

Decode and the surrogate fits run as CPU tasks (wherever the cluster has a free CPU, new
nodes included); the GPU stage (PredictorActors, one per device or fraction of one, a pool
that grows with the cluster) separates (demucs) and explains each track on its device;
ObjectRefs flow stage to stage so the driver never holds audio. At most ``in_flight`` tracks are in the pipeline at once
(backpressure); the single writer commits finished tracks atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline.catalogue import CatalogueError, CatalogueReader, ContentKeys
from pipeline.config import ExplainConfig, check_run_id, settings_diff
from pipeline.lease import Lease, LeaseHeld, LeaseLost
from pipeline.resources import (CPU_PREDICTOR_THREADS, DECODE_CPUS, PREDICTOR_CPUS_CPU_ONLY,
                                PREDICTOR_CPUS_WITH_GPU, SURROGATE_CPUS)
from pipeline import logs, signals
from pipeline.signals import interrupts_as_keyboard_interrupt
from musiclime.records import ErrorRecord, TrackResult

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
    unchanged: int = 0      # of skipped: unchanged since an earlier night (--incremental)
    format: str = ""
    computed: int = 0
    model_rows: int = 0
    seconds: float = 0.0
    message: str = ""
    errors: list = field(default_factory=list)
    actors: list = field(default_factory=list)     # PredictorActor.info() at the end
    driver_peak_rss_mb: float = 0.0


def catalogue_hash(path: str | Path) -> str:
    """sha256 of a catalogue file's bytes, or of a folder's file names and sizes."""
    from musiclime import storage
    h = hashlib.sha256()
    if storage.is_dir(path):
        start = len(storage.filesystem(path)[1].rstrip("/")) + 1
        for f, size in storage.walk(str(path)):
            h.update(storage.filesystem(f)[1][start:].encode())
            h.update(str(size).encode())
    else:
        with storage.open_input(path) as fh:
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


CRASHES_ALONE = 3
POOL_CHECK_S = 2.0  # how often the driver looks for room for more GPU-stage actors
ORPHAN_AFTER_S = 10.0  # tracks queued on a predictor that has not come back for this long move on


def _is_infrastructure(err: Exception) -> bool:
    """Actor, worker or node death, or lost objects: the cluster failed, not the track."""
    from ray import exceptions as rx
    infra = (rx.RayActorError, rx.WorkerCrashedError, rx.NodeDiedError, rx.ObjectLostError, rx.OwnerDiedError,
             rx.LocalRayletDiedError, rx.ActorUnavailableError)
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, infra):
            return True
        err = getattr(err, "cause", None) or err.__cause__
    return False


def _dead_actor_id(err: Exception) -> str | None:
    """The id (hex) of the actor whose death ``err`` reports, innermost first, or None."""
    from ray import exceptions as rx
    found, seen = None, set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, rx.RayActorError) and getattr(err, "actor_id", None):
            found = err.actor_id
        err = getattr(err, "cause", None) or err.__cause__
    return found


def _stage_of(err: Exception) -> str:
    name = getattr(err, "function_name", "") or ""
    text = f"{name} {err}"
    for stage, key in (("decode", "decode"), ("predict", "PredictorActor"), ("fit", "fit")):
        if key in text:
            return stage
    return "predict"


class _Job:
    """The Ray side of one invocation: CPU decode tasks, the GPU-stage pool, the fit actors.

    The pool follows ``--predictors``: a fixed count, ``MIN:MAX`` (all MAX asked for at once:
    those the cluster cannot place yet are the autoscaler's demand and join when placed) or
    ``auto`` (more are started as the cluster's GPUs grow). Work goes only to *ready*
    predictors: one whose probe (an ``info`` call) answered since it started or last died, so
    a predictor restarting after a kill or waiting for a node is never routed to."""

    def __init__(self, cfg: ExplainConfig, invocation_id: str, log):
        import ray

        from actors import PROBE_GROUP, PredictorActor
        from musiclime import stages
        from pipeline.ray_runtime import init_ray
        self.ray, self.cfg, self.log, self.invocation_id = ray, cfg, log, invocation_id
        init_ray(cfg.address)
        signals.reinstall()
        gpu = cfg.gpus_per_predictor > 0
        self.pool = cfg.pool
        threads = max(1, (os.cpu_count() or 2) // self.pool.low) if self.pool.fixed else CPU_PREDICTOR_THREADS
        # Actors come back after any number of deaths (a restart reruns __init__: the model
        # loads from its path again); Ray does not retry their calls: the driver does, since
        # only it knows whether a track died alone (a poison track) or beside others (chaos).
        self._predictor_cls = ray.remote(concurrency_groups=PROBE_GROUP)(PredictorActor)
        self._predictor_opts = dict(
            num_cpus=PREDICTOR_CPUS_WITH_GPU if gpu else PREDICTOR_CPUS_CPU_ONLY, num_gpus=cfg.gpus_per_predictor,
            max_restarts=-1, max_task_retries=0,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}})
        # with GPUs the actor picks cuda when its GPU is real (Ray's logical GPUs on a CPU
        # machine, as in the tests, run CPU torch)
        separator = None
        if cfg.separator == "demucs" and cfg.audio_used:  # separated in the GPU stage, on its device
            separator = ("demucs", {"model_name": cfg.demucs_model, "repo": cfg.demucs_repo,
                                    "allow_pickle": cfg.trust_pickle}, cfg.stem_cache)
        self._predictor_args = (cfg.model, cfg.explainer_spec(), cfg.modality, cfg.segments,
                                None if gpu else "cpu", cfg.labels, cfg.label_column, separator, cfg.precision)
        self.predictors: list = []
        self.load: list[int] = []
        self.ready: set[int] = set()
        self.probes: dict = {}      # probe ref -> predictor index
        self.unready_since: dict[int, float] = {}
        self.unusable: dict[int, str] = {}  # predictor -> why its model no longer loads there
        self.stats_refs: dict = {}  # info ref -> predictor index (for the busy share)
        self.busy: dict[int, tuple[float, float]] = {}  # predictor -> (busy s, up s) as last reported
        self.grown_at = 0.0
        # CPU stages are tasks: they run on any free CPU, as many at once as the cluster
        # allows, and Ray reruns one whose worker died (twice; then the driver's rules apply)
        self.decode_task = ray.remote(num_cpus=DECODE_CPUS, max_retries=2)(stages.decode)
        self.fit_task = ray.remote(num_cpus=SURROGATE_CPUS, max_retries=2)(stages.fit)
        # an actor keeps its id across restarts: a death names the predictor
        self.actor_stage: dict = {}
        self._add_predictor()
        self.info = ray.get(self.predictors[0].info.remote())  # fails fast if the model does not load
        self.poll()
        self.cfg_ref = ray.put(cfg)

    def _add_predictor(self) -> None:
        i = len(self.predictors)
        actor = self._predictor_cls.options(name=f"musiclime-predictor-{self.invocation_id}-{i}",
                                            **self._predictor_opts).remote(*self._predictor_args)
        self.predictors.append(actor)
        self.load.append(0)
        self.actor_stage[actor._actor_id.hex()] = ("predict", i)
        self.probe(i)

    def probe(self, i: int) -> None:
        """Stop routing to predictor ``i`` until it answers again (after a death or a kill)."""
        self.ready.discard(i)
        self.unready_since.setdefault(i, time.monotonic())
        self.probes[self.predictors[i].info.remote()] = i

    def poll(self, timeout: float = 0.0) -> None:
        """Mark predictors whose probe answered ready; probe again one that died meanwhile;
        every few seconds, start the predictors a grown cluster has room for."""
        from pipeline.resources import pool_target
        if self.probes:
            done, _ = self.ray.wait(list(self.probes), num_returns=len(self.probes), timeout=timeout)
            for ref in done:
                i = self.probes.pop(ref)
                try:
                    self.ray.get(ref)
                    self.ready.add(i)
                    self.unready_since.pop(i, None)
                except Exception as e:
                    if getattr(e, "actor_init_failed", False):  # the model does not load there
                        self.unusable[i] = _init_error(e)
                        self.log(f"predictor {i} cannot start ({self.unusable[i]}); not used")
                        continue
                    self.probe(i)  # died again while restarting: a call waits for the restart
        now = time.monotonic()
        if now - self.grown_at >= POOL_CHECK_S:
            self.grown_at = now
            self._collect_stats()
            target = pool_target(self.pool, self.cfg.gpus_per_predictor, self.ray.cluster_resources())
            while len(self.predictors) < target:
                self._add_predictor()
                self.log(f"GPU-stage pool: {len(self.predictors)} actor(s) (target {target})")

    def unusable_pool(self) -> str | None:
        """Why no predictor can run again (each failed to load the model when it (re)started:
        Ray does not restart an actor whose constructor raised), or None while one can."""
        if self.predictors and len(self.unusable) == len(self.predictors):
            return "; ".join(sorted(set(self.unusable.values())))
        return None

    def _collect_stats(self) -> None:
        """Read the answers to the last stats calls (never waiting) and ask the ready
        predictors again."""
        if self.stats_refs:
            done, _ = self.ray.wait(list(self.stats_refs), num_returns=len(self.stats_refs), timeout=0)
            for ref in done:
                i = self.stats_refs.pop(ref)
                try:
                    info = self.ray.get(ref)
                    self.busy[i] = (info["busy_s"], info["up_s"])
                except Exception:
                    self.busy.pop(i, None)  # it died: its uptime starts again
        asked = set(self.stats_refs.values())
        for i in sorted(self.ready - asked):
            self.stats_refs[self.predictors[i].info.remote()] = i

    def busy_share(self) -> float | None:
        """The share of their lives the GPU-stage actors spent separating and predicting."""
        up = sum(u for _, u in self.busy.values())
        return sum(b for b, _ in self.busy.values()) / up if up > 0 else None

    def submit(self, row: dict, predictor: int | None = None, avoid: set = frozenset()):
        """Chain the stages for one row on ``predictor`` (default: the least-loaded ready one
        not in ``avoid``); returns (final ref, predictor index)."""
        free = [j for j in sorted(self.ready) if j not in avoid] or sorted(self.ready)
        i = predictor if predictor is not None else min(free, key=self.load.__getitem__)
        self.load[i] += 1
        ref = self.decode_task.remote(row, self.cfg_ref, self.info["sample_rate"])
        ref = self.predictors[i].predict.remote([ref])
        ref = self.fit_task.remote(ref, self.cfg_ref, self.invocation_id)
        return ref, i


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
    from pipeline.output import resolve_format
    try:
        storage.makedirs(cfg.out)
        fmt = resolve_format(cfg.out, cfg.format)
        lease = make_lease(cfg.out, run_id, stale_after=cfg.lease_timeout)
    except ValueError as e:
        return RunSummary(run_id, EXIT_USAGE, message=str(e))
    manifest = Manifest(cfg.out, run_id, cfg, invocation_id, fmt)
    diff = settings_diff(manifest.previous.get("settings", {}), cfg.settings())
    if diff:
        return RunSummary(run_id, EXIT_USAGE, message=_resume_refused(run_id, diff))
    try:
        lease.acquire()
    except LeaseHeld as e:
        return RunSummary(run_id, EXIT_USAGE, message=str(e))
    try:
        with interrupts_as_keyboard_interrupt():
            return _run_locked(cfg, reader, manifest, lease, invocation_id, log, show_progress, t0)
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


def _is_local(cfg: ExplainConfig) -> bool:
    return cfg.address in (None, "local") and not os.environ.get("RAY_ADDRESS")


def _placement_problems(cfg: ExplainConfig) -> list[str]:
    """An actor that can never be placed would wait forever: such a plan is refused up front,
    against the cluster as it can ever be (see :func:`pipeline.resources.cluster_node_types`)."""
    from pipeline.resources import cluster_node_types, demands, placement_problems
    return placement_problems(demands(cfg), cluster_node_types(_is_local(cfg))[0])


def dry_run(cfg: ExplainConfig) -> tuple[int, str]:
    """The plan without doing it: stages, actors, CPUs/GPUs each, the cluster it is checked
    against, rows to do and already committed. Exit 0, or 2 when it can never be placed."""
    from pipeline.plan import make_plan
    from pipeline.resources import cluster_node_types, demands, placement_problems, plan_text
    try:
        run_id = check_run_id(cfg.run_id or "dry-run")
        from pipeline.output import open_writer, resolve_format
        reader = CatalogueReader(cfg.catalogue, limit=cfg.limit)
        writer = open_writer(resolve_format(cfg.out, cfg.format), cfg.out, run_id, "dry-run")
        plan = make_plan(reader, writer)  # reads only
    except (CatalogueError, ValueError) as e:
        return EXIT_USAGE, str(e)
    wanted = demands(cfg)
    if not _is_local(cfg):
        from pipeline.ray_runtime import init_ray
        init_ray(cfg.address)
    types, source = cluster_node_types(_is_local(cfg))
    text = plan_text(wanted, types, plan.n_rows, plan.n_done, plan.n_work) + f"\n(cluster as read from: {source})"
    if not cfg.pool.fixed:
        from pipeline.resources import pool_target
        resources = {"CPU": sum(t.cpus * t.max_nodes for t in types), "GPU": sum(t.gpus * t.max_nodes for t in types)}
        text += (f"\nGPU-stage pool --predictors {cfg.predictors}: {cfg.pool.low} placed first, up to "
                 f"{pool_target(cfg.pool, cfg.gpus_per_predictor, resources)} on this cluster as it can be")
    problems = placement_problems(wanted, types)
    if problems:
        return EXIT_USAGE, text + "\nthis plan can never be placed:\n  " + "\n  ".join(problems)
    return EXIT_OK, text


def _resume_refused(run_id: str, diff: list[str]) -> str:
    return (f"run {run_id} was started with other settings; resuming it would mix explanations that cannot "
            f"be compared. Use a new --run-id, or the old settings:\n  " + "\n  ".join(diff))


class Manifest:
    """``runs/<run>.json`` and ``run.json``: the run's config, resolved settings, config
    hash, output format, classes and invocations, each write atomic (a rename, or one PUT
    on object stores)."""

    def __init__(self, out: str, run_id: str, cfg: ExplainConfig, invocation_id: str, fmt: str):
        from pipeline.output import location, read_json
        self.out, self.run_id, self.cfg, self.invocation_id, self.format = out, run_id, cfg, invocation_id, fmt
        self.path = location(out, "runs", f"{run_id}.json")
        self.latest = location(out, "run.json")
        self.previous = read_json(self.path) or {}
        self.model: dict = {k: self.previous.get(k) for k in ("classes", "model_id", "sample_rate")}
        self.started = self.previous.get("started") or time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._catalogue_hash: str | None = None

    def catalogue_hash(self) -> str:
        if self._catalogue_hash is None:  # read once: a catalogue may be large
            self._catalogue_hash = catalogue_hash(self.cfg.catalogue)
        return self._catalogue_hash

    def config_hash(self) -> str | None:
        return self.cfg.config_hash(self.model["model_id"]) if self.model.get("model_id") else None

    def write(self, status: str, rows: int | None = None) -> None:
        from musiclime import storage
        old = self.previous
        settings = self.cfg.settings(self.model.get("model_id"))
        doc = {"run_id": self.run_id, "status": status, "format": self.format, "incremental": self.cfg.incremental,
               "config": self.cfg.to_json(), "seed": self.cfg.seed, "settings": settings,
               "config_hash": self.config_hash(),
               **self.model, "catalogue_hash": self.catalogue_hash(), "versions": versions(),
               "invocation_id": self.invocation_id, "rows": rows,
               "invocations": list(dict.fromkeys(old.get("invocations", []) + [self.invocation_id])),
               "started": self.started, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        blob = json.dumps(doc, indent=2, default=str).encode()
        for path in (self.path, self.latest):
            storage.write_atomic(path, blob)
        self.previous = doc


def _start_job(cfg: ExplainConfig, manifest: Manifest, invocation_id: str, log, summary: RunSummary, n_rows: int):
    """Ray, the placement check and the GPU-stage pool; the model's hash into the manifest.
    None (with the summary's exit code and message set) when the run must not go on."""
    if not _is_local(cfg):
        from pipeline.ray_runtime import init_ray
        init_ray(cfg.address)
    problems = _placement_problems(cfg)
    if problems:
        summary.exit_code, summary.message = EXIT_USAGE, "this plan can never be placed:\n  " + "\n  ".join(problems)
        return None
    job = _Job(cfg, invocation_id, log)
    diff = settings_diff(manifest.previous.get("settings", {}), cfg.settings(job.info["model_id"]))
    if diff:  # the model changed under the same run id: refuse before any commit
        summary.exit_code, summary.message = EXIT_USAGE, _resume_refused(cfg.run_id, diff)
        return None
    manifest.model = {k: job.info[k] for k in ("classes", "model_id", "sample_rate")}
    manifest.write("running", n_rows)
    return job


def _run_locked(cfg: ExplainConfig, reader: CatalogueReader, manifest: Manifest, lease: Lease, invocation_id: str,
                log, show_progress: bool, t0: float) -> RunSummary:
    from pipeline.output import MembersWriter, history, open_writer
    from pipeline.plan import make_plan, outcome, rows_to_do
    from pipeline.progress import Progress
    run_id = cfg.run_id
    writer = open_writer(manifest.format, cfg.out, run_id, invocation_id, cfg.commit_every, lease=lease)
    rolled = writer.recover()
    if cfg.retry_errors:
        writer.drop_errors()
    summary = RunSummary(run_id, EXIT_FATAL, format=manifest.format)
    job = None
    done_before = None
    if cfg.incremental:  # what earlier nights did is looked up under this model's hash: load it first
        job = _start_job(cfg, manifest, invocation_id, log, summary, None)
        if job is None:
            return summary
        done_before = history(cfg.out, manifest.format, manifest.config_hash(), run_id,
                              with_errors=not cfg.retry_errors)
    members = MembersWriter(cfg.out, manifest.format, run_id)
    keys_of = ContentKeys(cfg.label_column, cfg.audio_used)
    try:
        plan = make_plan(reader, writer, history=done_before, members=members, keys_of=keys_of)
        members.close()
    except CatalogueError as e:
        return RunSummary(run_id, EXIT_USAGE, message=str(e), format=manifest.format)
    summary.total, summary.skipped, summary.unchanged = plan.n_rows, plan.n_done, plan.n_unchanged
    if rolled:
        log(f"recovered {rolled} committed batch(es) of an interrupted writer")
    if plan.n_unchanged:
        log(f"run {run_id}: {plan.n_unchanged} of {plan.n_rows} rows unchanged since an earlier night")
    if plan.n_done > plan.n_unchanged:
        log(f"run {run_id}: {plan.n_done - plan.n_unchanged} of {plan.n_rows} rows already committed, "
            f"{plan.n_work} to do")
    manifest.write("running", plan.n_rows)
    try:
        if plan.n_work and job is None:
            job = _start_job(cfg, manifest, invocation_id, log, summary, plan.n_rows)
            if job is None:
                return summary
        bar = Progress(plan.n_work, "tracks", status_every=cfg.status_every) if show_progress else None
        _drive(job, cfg, rows_to_do(reader, plan, keys_of), writer, summary, bar)
        if job is not None:
            summary.actors = _actor_infos(job)
            names = {n["NodeID"]: n.get("NodeName", "") for n in job.ray.nodes()}
            for a in summary.actors:
                a["node_name"] = names.get(a.get("node_id"), "")
                log(f"GPU-stage actor pid {a['pid']} on node {a['node_name']} ({a.get('node_id', '')}): "
                    f"{a['tracks_done']} tracks, busy {a.get('busy_share', 0.0):.0%}")
        writer.commit()
    except KeyboardInterrupt:  # SIGINT, or SIGTERM from `ray job stop` / an eviction (see the CLI)
        _commit_quietly(writer, log)
        result = outcome(plan, writer)
        summary.explained, summary.failed = result.explained, result.failed
        summary.exit_code = EXIT_FATAL
        summary.message = (f"interrupted: what was complete is committed; rerun the same command "
                           f"(--run-id {run_id}) to finish")
        manifest.write("interrupted", plan.n_rows)
        log(summary.message)
        return summary
    except LeaseLost as e:  # another driver took the output over: commit nothing more
        summary.exit_code, summary.message = EXIT_FATAL, f"fatal: {e}"
        log(summary.message)
        return summary
    except Exception as e:  # fatal: the run can be resumed with the same --run-id
        _commit_quietly(writer, log)
        summary.message = f"fatal: {type(e).__name__}: {e}"
        summary.exit_code = EXIT_FATAL
        manifest.write("failed", plan.n_rows)
        log(summary.message)
        return summary
    result = outcome(plan, writer)
    summary.explained, summary.failed = result.explained, result.failed
    if result.unaccounted:
        summary.exit_code, summary.message = EXIT_FATAL, f"{result.unaccounted} rows unaccounted for"
    else:
        summary.exit_code = EXIT_OK if not result.failed else EXIT_SOME_ERRORS
    summary.seconds = time.perf_counter() - t0
    import resource
    summary.driver_peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    manifest.write("finished" if summary.exit_code in (EXIT_OK, EXIT_SOME_ERRORS) else "failed", plan.n_rows)
    return summary


def _init_error(e: Exception) -> str:
    """The constructor's own error out of Ray's actor-died message (its last line names it)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    own = next((ln for ln in reversed(lines) if "Error" in ln.split(":")[0]), lines[0] if lines else "")
    return own[:300]


def _actor_infos(job) -> list:
    """The predictors' own statistics, for the summary: diagnostics only, so an actor that
    is restarting just then (after a kill) is skipped, never a reason to fail the run."""
    out = []
    for i in sorted(job.ready):
        try:
            out.append(job.ray.get(job.predictors[i].info.remote(), timeout=10))
        except Exception:
            continue
    return out


def _commit_quietly(writer, log) -> None:
    """Commit what is complete on the way out; a failure here is logged, not raised (the
    buffer is then recomputed by the rerun, never half-written)."""
    try:
        writer.commit()
    except Exception as e:
        log(f"could not commit the last batch ({type(e).__name__}: {e}); the rerun recomputes it")


def _drive(job, cfg: ExplainConfig, items, writer, summary: RunSummary, bar) -> None:
    """Feed rows to the job with at most ``cfg.in_flight`` in flight; error records go
    straight to the writer. ``items`` is a stream: the driver never holds the catalogue
    (only the content keys of the rows in flight, for their tables' rows)."""
    t0 = time.perf_counter()
    inflight: dict = {}     # ref -> (row, attempt, predictor index)
    crashes: dict = {}      # track id -> infrastructure deaths while alone on its predictor
    died_on: dict = {}      # track id -> the predictor it was on when it last died
    solo: list = []         # (row, attempt) of suspects: tracks that died in a crash, retried alone
    reserved: dict = {}     # predictor index -> the ref of the suspect running alone on it
    submitted: dict = {}    # ref -> when it was submitted
    beats: dict = {}        # predictor index -> (track it is on or None, seconds since its last model batch)
    beat_refs: dict = {}    # heartbeat ref -> (predictor index, when asked)
    beat_asked: dict = {}   # predictor index -> when it was last asked
    stalls: dict = {}       # track id -> times a predictor stalled on it
    stall_killed: set = set()   # refs failed by our own kill of a stalled predictor
    timed_out: set = set()      # refs to record as timeout when they fail
    waiting: list = []          # (row, attempt) to retry once a predictor is ready again
    counts = {"ok": 0, "failed": 0}
    keys: dict = {}             # catalogue row -> content key, while the row is in the pipeline
    items = iter(items)
    exhausted = False

    def record(res) -> None:
        if isinstance(res, TrackResult):
            res.track["content_key"] = keys.pop(res.track["catalogue_row"], None)
            writer.add_track(res.track, res.explanations)
            summary.model_rows += res.model_rows
            summary.computed += 1
            counts["ok"] += 1
        else:
            row = res.row(writer.invocation_id)
            row["content_key"] = keys.pop(res.catalogue_row, row["content_key"])
            writer.add_error(row)
            summary.errors.append(res)
            counts["failed"] += 1
        writer.maybe_commit()

    def submit(row: dict, attempt: int, predictor: int | None = None) -> None:
        if predictor is None and not job.ready:  # every predictor is restarting: wait for one
            waiting.append((row, attempt))
            return
        ref, j = job.submit(row, predictor, avoid=set(reserved))
        if predictor is not None:
            reserved[j] = ref
        inflight[ref] = (row, attempt, j)
        submitted[ref] = time.monotonic()

    def read_heartbeats() -> None:
        """Ask each busy predictor which track it is on and how long ago it last finished a
        model batch (answered by its probe thread while it works, never waited for)."""
        now = time.monotonic()
        if beat_refs:
            done, _ = job.ray.wait(list(beat_refs), num_returns=len(beat_refs), timeout=0)
            for ref in done:
                j, _ = beat_refs.pop(ref)
                try:
                    beats[j] = job.ray.get(ref)
                except Exception:
                    beats.pop(j, None)  # it died
        pending = {j for j, _ in beat_refs.values()}
        every = min(1.0, cfg.stall_timeout / 4)
        for j in {k for _, _, k in inflight.values()} - pending:
            if j in job.ready and now - beat_asked.get(j, 0.0) >= every:
                beat_asked[j] = now
                beat_refs[job.predictors[j].heartbeat.remote()] = (j, now)

    def check_stalls() -> None:
        """A predictor is stalled when it is on a track and has finished no model batch for
        ``stall_timeout`` (a long track that keeps finishing batches is not; time spent
        waiting for a decode or in the fit stage does not count), or when its heartbeat has
        gone unanswered that long (the whole process is stuck). It is replaced and its
        tracks retried; the track it stalled on twice is recorded as timeout."""
        read_heartbeats()
        now = time.monotonic()
        unanswered = {j: now - asked for j, asked in beat_refs.values()}
        for j in {k for _, _, k in inflight.values()} & job.ready:
            on, idle = beats.get(j, (None, None))
            if not ((on is not None and idle > cfg.stall_timeout) or unanswered.get(j, 0.0) > cfg.stall_timeout):
                continue
            mine = [r for r, (_, _, k) in inflight.items() if k == j]
            # the track it is on, as its heartbeat said (a threaded actor need not run its
            # calls in order); the oldest of its tracks when it never answered
            stuck = next((r for r in mine if inflight[r][0]["track_id"] == on), None) \
                or min(mine, key=submitted.__getitem__)
            tid = inflight[stuck][0]["track_id"]
            stalls[tid] = stalls.get(tid, 0) + 1
            if stalls[tid] >= 2:
                timed_out.add(stuck)
            stall_killed.update(mine)
            logs.get("explain").warning(f"predictor {j} finished no model batch for {cfg.stall_timeout:g} s on "
                                        f"track {tid!r}: replacing it and retrying its {len(mine)} track(s)")
            job.ray.kill(job.predictors[j], no_restart=False)  # Ray restarts it
            job.probe(j)
            beats.pop(j, None)
            for ref in [r for r, (k, _) in beat_refs.items() if k == j]:
                del beat_refs[ref]

    def rescue_orphans() -> None:
        """Tracks sent to a predictor just as it died wait for its restart, which may never
        come (its node is gone and nothing else has room): after ORPHAN_AFTER_S they move to
        a ready predictor. Their old calls are cancelled and, should one still finish, never
        read (they are no longer in flight): nothing is recorded twice."""
        now = time.monotonic()
        for ref, (row, attempt, j) in list(inflight.items()):
            since = job.unready_since.get(j)
            if since is None or now - since < ORPHAN_AFTER_S or not job.ready:
                continue
            del inflight[ref]
            submitted.pop(ref, None)
            job.load[j] -= 1
            try:
                job.ray.cancel(ref)
            except Exception:
                pass
            if reserved.get(j) == ref:
                del reserved[j]
                solo.append((row, attempt))
            else:
                submit(row, attempt)

    def submit_suspects() -> None:
        """Each suspect runs alone, on another predictor than the one it died on while one is
        free or may become free: a killer of one actor is then not mistaken for a poison track
        (a poison track kills whichever predictor it lands on)."""
        busy = {k for _, _, k in inflight.values()}
        for row, attempt in list(solo):
            free = [j for j in sorted(job.ready) if j not in busy and j not in reserved]
            other = [j for j in free if j != died_on.get(row["track_id"])]
            j = other[0] if other else (free[0] if free and not busy and len(reserved) == 0 else None)
            if j is None:
                continue
            solo.remove((row, attempt))
            submit(row, attempt, predictor=j)
            busy.add(j)

    try:
        if job is None:  # nothing for the model: only rows whose catalogue cells failed to decode
            for item in items:
                record(item)
            return
        while True:
            job.poll()
            rescue_orphans()
            while waiting and job.ready:
                submit(*waiting.pop(0))
            if solo:
                submit_suspects()
            # new rows wait while suspects are queued or every ready predictor runs one alone
            while not exhausted and len(inflight) < cfg.in_flight(len(job.ready)) and not solo and not waiting \
                    and len(job.ready - set(reserved)) > 0:
                item = next(items, None)
                if item is None:
                    exhausted = True
                elif isinstance(item, ErrorRecord):
                    record(item)
                else:
                    keys[item["catalogue_row"]] = item.get("content_key")
                    submit(item, 1)
            if not inflight:
                if exhausted and not solo and not waiting:
                    break
                why = job.unusable_pool()
                if why:  # rows would wait forever: fail, resumable once the model loads again
                    raise RuntimeError(f"no GPU-stage actor can load the model any more: {why}")
                job.poll(timeout=1.0)  # no predictor ready (all restarting or not placed yet): wait
                continue
            check_stalls()
            # a timeout so SIGINT/SIGTERM reach the driver between waits
            ready, _ = job.ray.wait(list(inflight), num_returns=1, timeout=1.0)
            if not ready:
                continue
            ref = ready[0]
            row, attempt, i = inflight.pop(ref)
            submitted.pop(ref, None)
            was_alone = reserved.get(i) == ref
            if was_alone:
                del reserved[i]
            job.load[i] -= 1
            try:
                res = job.ray.get(ref)
            except Exception as e:
                tid = row["track_id"]
                if ref in timed_out:
                    res = ErrorRecord(tid, row["catalogue_row"], "predict", "timeout",
                                      f"track {tid!r} stalled its predictor twice (no model batch finished for "
                                      f"{cfg.stall_timeout:g} s)", attempt)
                elif ref in stall_killed:  # our own kill: retry, the stall is counted already
                    stall_killed.discard(ref)
                    submit(row, attempt)
                    continue
                elif _is_infrastructure(e):
                    # A dead actor, worker or node is not the track's fault: the track is
                    # retried alone on a predictor, so that a death then is its own. Three
                    # deaths alone make it worker_crash; deaths beside others never count.
                    # Only the death of its own predictor (or of a worker that ran its task)
                    # counts against a track; a fit actor killed beside it does not.
                    dead = job.actor_stage.get(_dead_actor_id(e))
                    if dead is not None and dead[0] == "predict" and dead[1] in job.ready:
                        job.probe(dead[1])  # routed to again once it is back
                    own = dead is None or dead == ("predict", i)
                    crashes[tid] = crashes.get(tid, 0) + int(was_alone and own)
                    died_on[tid] = i
                    if crashes[tid] < CRASHES_ALONE:
                        solo.append((row, attempt))
                        continue
                    res = ErrorRecord(tid, row["catalogue_row"], dead[0] if dead else _stage_of(e), "worker_crash",
                                      f"track {tid!r} took its worker down {crashes[tid]} times while alone on it: "
                                      f"{str(e).splitlines()[0][:300]}", attempt)
                elif attempt < cfg.max_attempts:  # a bug or a flaky model: retry, then record
                    submit(row, attempt + 1)
                    continue
                else:
                    res = ErrorRecord(tid, row["catalogue_row"], _stage_of(e), type(e).__name__,
                                      f"track {tid!r} failed {attempt} times: {str(e).splitlines()[0][:500]}",
                                      attempt)
            record(res)
            if bar:
                rate = summary.model_rows / max(time.perf_counter() - t0, 1e-9)
                busy = job.busy_share()
                bar.update(counts["ok"], counts["failed"], extra=f"{rate:.0f} masks/s, {len(job.ready)} GPU-stage "
                           f"actor(s)" + ("" if busy is None else f" {busy:.0%} busy"))
    except KeyboardInterrupt:
        # keep what already finished: collect the completed refs without waiting for more
        if inflight:
            done, _ = job.ray.wait(list(inflight), num_returns=len(inflight), timeout=0)
            for ref in done:
                try:
                    res = job.ray.get(ref, timeout=0)
                except Exception:
                    continue
                if isinstance(res, (TrackResult, ErrorRecord)):
                    record(res)
        raise
    finally:
        if bar:
            bar.close()
