"""The GPU-stage pool: the Ray side of one invocation (CPU decode and fit tasks, the
PredictorActors), with every Ray option of the job in one place.

The pool follows ``--predictors``: a fixed count, ``MIN:MAX`` (all MAX asked for at once:
those the cluster cannot place yet are the autoscaler's demand and join when placed) or
``auto`` (more are started as the cluster's GPUs grow). Work goes only to *ready*
predictors: one whose probe (an ``info`` call) answered since it started or last died, so a
predictor restarting after a kill or waiting for a node is never routed to. Which predictor
gets which row is the policy's choice (:mod:`pipeline.engine.policy`), not the pool's.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from pipeline import signals
from pipeline.config import ExplainConfig
from pipeline.engine.faults import Failure, classify, init_error
from pipeline.engine.policy import Heartbeat
from pipeline.resources import (
    DECODE_CPUS,
    PREDICTOR_CPUS_CPU_ONLY,
    PREDICTOR_CPUS_WITH_GPU,
    SURROGATE_CPUS,
    predictor_threads,
)

POOL_CHECK_S = 2.0  # how often the pool looks for room for more GPU-stage actors


class PredictorPool:
    def __init__(self, cfg: ExplainConfig, invocation_id: str, log):
        import ray

        from actors import PROBE_GROUP, PredictorActor
        from musiclime import stages
        from pipeline.ray_runtime import init_ray

        self.ray, self.cfg, self.log, self.invocation_id = ray, cfg, log, invocation_id
        init_ray(cfg.address)
        signals.reinstall()
        gpu = cfg.gpus_per_predictor > 0
        self.size = cfg.pool
        # the cluster's CPUs, not this driver's: actors run on other nodes too
        threads = predictor_threads(self.size, cfg.gpus_per_predictor, ray.cluster_resources())
        # Actors come back after any number of deaths (a restart reruns __init__: the model
        # loads from its path again); Ray does not retry their calls: the driver does, since
        # only it knows whether a track died alone (a poison track) or beside others (chaos).
        self._predictor_cls = ray.remote(concurrency_groups=PROBE_GROUP)(PredictorActor)
        self._predictor_opts = dict(
            num_cpus=PREDICTOR_CPUS_WITH_GPU if gpu else PREDICTOR_CPUS_CPU_ONLY,
            num_gpus=cfg.gpus_per_predictor,
            max_restarts=-1,
            max_task_retries=0,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}},
        )
        # with GPUs the actor picks cuda when its GPU is real (Ray's logical GPUs on a CPU
        # machine, as in the tests, run CPU torch)
        separator = None
        if cfg.separator == "demucs" and cfg.audio_used:  # separated in the GPU stage, on its device
            separator = (
                "demucs",
                {"model_name": cfg.demucs_model, "repo": cfg.demucs_repo, "allow_pickle": cfg.trust_pickle},
                cfg.stem_cache,
            )
        self._predictor_args = (
            cfg.model,
            cfg.explainer_spec(),
            cfg.modality,
            cfg.segments,
            None if gpu else "cpu",
            cfg.labels,
            cfg.label_column,
            separator,
            cfg.precision,
            cfg.window,
            cfg.model_window,
            cfg.compile,
        )
        self.predictors: list = []
        self.ready: set[int] = set()
        self.probes: dict = {}  # probe ref -> predictor index
        self.unready_since: dict[int, float] = {}
        self.unusable: dict[int, str] = {}  # predictor -> why its model no longer loads there
        self.stats_refs: dict = {}  # info ref -> predictor index (for the busy share)
        self.busy_time: dict[int, tuple[float, float]] = {}  # predictor -> (busy s, up s) as last reported
        self.beats: dict[int, Heartbeat] = {}  # predictor -> its last heartbeat
        self.beat_refs: dict = {}  # heartbeat ref -> (predictor index, when asked)
        self.beat_asked: dict[int, float] = {}  # predictor -> when it was last asked
        self.grown_at = 0.0
        # CPU stages are tasks: they run on any free CPU, as many at once as the cluster
        # allows, and Ray reruns one whose worker died (twice; then the policy's rules apply)
        self.decode_task = ray.remote(num_cpus=DECODE_CPUS, max_retries=2)(stages.decode)
        self.fit_task = ray.remote(num_cpus=SURROGATE_CPUS, max_retries=2)(stages.fit)
        # an actor keeps its id across restarts: a death names the predictor
        self.actor_stage: dict[str, tuple[str, int]] = {}
        self._add_predictor()
        self.info = ray.get(self.predictors[0].info.remote())  # fails fast if the model does not load
        self.poll()
        # the stages get typed specs of the settings they read, never the pipeline's config
        # the model's own window (a plugin's window_seconds, an AST checkpoint's 10.24 s) where
        # the registry could not tell it: the decoded window is what the model hears
        window_s = cfg.model_window or self.info.get("window_seconds")
        self.decode_ref = ray.put(replace(cfg.decode_spec(), model_window=window_s))
        self.fit_ref = ray.put(cfg.fit_spec(self.info["model_id"]))

    def _add_predictor(self) -> None:
        i = len(self.predictors)
        actor = self._predictor_cls.options(
            name=f"musiclime-predictor-{self.invocation_id}-{i}", **self._predictor_opts
        ).remote(*self._predictor_args)
        self.predictors.append(actor)
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
                        self.unusable[i] = init_error(e)
                        self.log(f"predictor {i} cannot start ({self.unusable[i]}); not used")
                        continue
                    self.probe(i)  # died again while restarting: a call waits for the restart
        now = time.monotonic()
        if now - self.grown_at >= POOL_CHECK_S:
            self.grown_at = now
            self._collect_stats()
            target = pool_target(self.size, self.cfg.gpus_per_predictor, self.ray.cluster_resources())
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
        for _ref, i, value in self._answered(self.stats_refs):
            if isinstance(value, Exception):
                self.busy_time.pop(i, None)  # it died: its uptime starts again
            else:
                self.busy_time[i] = (value["busy_s"], value["up_s"])
        asked = set(self.stats_refs.values())
        for i in sorted(self.ready - asked):
            self.stats_refs[self.predictors[i].info.remote()] = i

    def _answered(self, refs: dict) -> list[tuple[Any, Any, Any]]:
        """Pop the refs of ``refs`` that answered (never waiting): (ref, its value in refs,
        the answer or the exception it raised)."""
        if not refs:
            return []
        done, _ = self.ray.wait(list(refs), num_returns=len(refs), timeout=0)
        out = []
        for ref in done:
            key = refs.pop(ref)
            try:
                out.append((ref, key, self.ray.get(ref)))
            except Exception as e:
                out.append((ref, key, e))
        return out

    def busy_share(self) -> float | None:
        """The share of their lives the GPU-stage actors spent separating and predicting."""
        up = sum(u for _, u in self.busy_time.values())
        return sum(b for b, _ in self.busy_time.values()) / up if up > 0 else None

    def heartbeats(self, working: set[int]) -> tuple[dict[int, Heartbeat], dict[int, float]]:
        """Ask each working predictor which track it is on and how long ago it last finished
        a model batch (answered by its probe thread while it works, never waited for).
        Returns the last heartbeats and, per predictor, how long its question is unanswered."""
        now = time.monotonic()
        for _, (j, _asked), value in self._answered(self.beat_refs):
            if isinstance(value, Exception):
                self.beats.pop(j, None)  # it died
            else:
                on, idle = value
                self.beats[j] = Heartbeat(on, idle or 0.0)
        pending = {j for j, _ in self.beat_refs.values()}
        every = min(1.0, self.cfg.stall_timeout / 4)
        for j in working - pending:
            if j in self.ready and now - self.beat_asked.get(j, 0.0) >= every:
                self.beat_asked[j] = now
                self.beat_refs[self.predictors[j].heartbeat.remote()] = (j, now)
        return dict(self.beats), {j: now - asked for j, asked in self.beat_refs.values()}

    def kill(self, j: int) -> None:
        """Kill predictor ``j`` (Ray restarts it) and forget what it said of itself."""
        self.ray.kill(self.predictors[j], no_restart=False)
        self.probe(j)
        self.beats.pop(j, None)
        for ref in [r for r, (k, _) in self.beat_refs.items() if k == j]:
            del self.beat_refs[ref]

    def submit(self, predictor: int, rows: list[dict], group: int = 1) -> list:
        """Chain the stages for each row on ``predictor``; the final ref of each. Every row
        is its own call (a failure, a retry or an error row stays per track); the first call
        of each ``group`` of rows also carries the others' decoded audio, so that demucs
        separates the group in one batched call and the later calls find their stems cached."""
        decoded = [self.decode_task.remote(row, self.decode_ref, self.info["sample_rate"]) for row in rows]
        out = []
        for i, ref in enumerate(decoded):
            ahead = decoded[i + 1 : i - i % group + group] if i % group == 0 else []
            pred = self.predictors[predictor].predict.remote([ref], ahead)
            out.append(self.fit_task.remote(pred, self.fit_ref, self.invocation_id))
        return out

    def cancel(self, ref) -> None:
        try:
            self.ray.cancel(ref)
        except Exception:
            pass

    def classify(self, err: BaseException) -> Failure:
        return classify(err, self.actor_stage)

    def actor_infos(self) -> list[dict]:
        """The predictors' own statistics, for the summary: diagnostics only, so an actor that
        is restarting just then (after a kill) is skipped, never a reason to fail the run."""
        out = []
        for i in sorted(self.ready):
            try:
                out.append(self.ray.get(self.predictors[i].info.remote(), timeout=10))
            except Exception:
                continue
        names = {n["NodeID"]: n.get("NodeName", "") for n in self.ray.nodes()}
        for a in out:
            a["node_name"] = names.get(a.get("node_id"), "")
        return out
