"""Where a run's actors can go: the placement check every run makes before Ray starts its
pool, and ``--dry-run``, which prints the plan and stops."""
from __future__ import annotations

import os

from pipeline.catalogue import CatalogueError, CatalogueReader
from pipeline.config import ExplainConfig, check_run_id
from pipeline.exits import EXIT_OK, EXIT_USAGE


def is_local(cfg: ExplainConfig) -> bool:
    return cfg.address in (None, "local") and not os.environ.get("RAY_ADDRESS")


def placement_problems(cfg: ExplainConfig) -> list[str]:
    """An actor that can never be placed would wait forever: such a plan is refused up front,
    against the cluster as it can ever be (see :func:`pipeline.resources.cluster_node_types`)."""
    from pipeline.resources import cluster_node_types, demands
    from pipeline.resources import placement_problems as problems_on
    return problems_on(demands(cfg), cluster_node_types(is_local(cfg))[0])


def dry_run(cfg: ExplainConfig) -> tuple[int, str]:
    """The plan without doing it: stages, actors, CPUs/GPUs each, the cluster it is checked
    against, rows to do and already committed. Exit 0, or 2 when it can never be placed."""
    from pipeline.resources import cluster_node_types, demands, plan_text
    from pipeline.resources import placement_problems as problems_on
    from pipeline.worklist import make_worklist
    try:
        run_id = check_run_id(cfg.run_id or "dry-run")
        from pipeline.output import open_writer, resolve_format
        reader = CatalogueReader(cfg.catalogue, limit=cfg.limit)
        writer = open_writer(resolve_format(cfg.out, cfg.format), cfg.out, run_id, "dry-run")
        work = make_worklist(reader, writer)  # reads only
    except (CatalogueError, ValueError) as e:
        return EXIT_USAGE, str(e)
    wanted = demands(cfg)
    if not is_local(cfg):
        from pipeline.ray_runtime import init_ray
        init_ray(cfg.address)
    types, source = cluster_node_types(is_local(cfg))
    text = plan_text(wanted, types, work.n_rows, work.n_done, work.n_work) + f"\n(cluster as read from: {source})"
    text += "\n" + window_cost(_with_model_window(cfg))
    if not cfg.pool.fixed:
        from pipeline.resources import pool_target
        resources = {"CPU": sum(t.cpus * t.max_nodes for t in types), "GPU": sum(t.gpus * t.max_nodes for t in types)}
        text += (f"\nGPU-stage pool --predictors {cfg.predictors}: {cfg.pool.low} placed first, up to "
                 f"{pool_target(cfg.pool, cfg.gpus_per_predictor, resources)} on this cluster as it can be")
    problems = problems_on(wanted, types)
    if problems:
        return EXIT_USAGE, text + "\nthis plan can never be placed:\n  " + "\n  ".join(problems)
    return EXIT_OK, text


def _with_model_window(cfg: ExplainConfig) -> ExplainConfig:
    """``cfg`` with the model's window where its files say it (a dry run loads no model)."""
    from dataclasses import replace

    from musiclime.models.registry import resolve
    try:
        return replace(cfg, model_window=cfg.model_window or resolve(cfg.model).max_seconds)
    except Exception:  # a model that does not resolve: the run itself says why
        return cfg


def window_cost(cfg: ExplainConfig) -> str:
    """What one perturbation costs the model under ``--window``."""
    if cfg.window != "whole":
        return f"model cost: 1 model window per perturbation (the middle {cfg.max_seconds:g} s, or the model's window)"
    if cfg.model_window:
        import math
        n = math.ceil(cfg.max_seconds / cfg.model_window)
        return (f"model cost: --window whole: up to {n} model windows of {cfg.model_window:g} s per perturbation "
                f"(tracks up to {cfg.max_seconds:g} s): rows x windows")
    return (f"model cost: --window whole: tracks up to {cfg.max_seconds:g} s, each perturbation heard in "
            f"ceil(track length / the model's window) windows (one when the model takes any length): rows x windows")
