"""What a run asks of a cluster, and whether a cluster can ever give it.

:func:`demands` lists each stage's actors and tasks with the CPUs and GPUs each one takes
(the numbers the driver passes to Ray: one place for both). :func:`placement_problems`
packs them onto the largest cluster a node-type list allows (first fit, largest first):
an actor that fits on no node type, or a pool that needs more GPUs than the node types'
``max_workers`` can bring, is reported with the arithmetic, instead of a driver waiting
forever in ``ray.wait`` for an actor Ray cannot place.
"""
from __future__ import annotations

from dataclasses import dataclass

# the per-actor and per-task shares the driver requests
PREDICTOR_CPUS_CPU_ONLY, PREDICTOR_CPUS_WITH_GPU = 0.5, 1.0
SURROGATE_CPUS, DECODE_CPUS = 0.25, 0.25
CPU_PREDICTOR_THREADS = 4  # --predictors auto without GPUs: one GPU-stage actor per this many CPUs


@dataclass(frozen=True)
class PoolSize:
    """How many GPU-stage actors: between ``low`` and ``high``; ``high`` None (``auto``)
    follows the cluster: floor(cluster GPUs / GPUs per actor), or a count from the CPUs."""
    low: int
    high: int | None

    @classmethod
    def parse(cls, value: int | str) -> PoolSize:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise ValueError(f"predictors must be >= 1, got {value!r}")
            return cls(value, value)
        text = str(value).strip()
        if text == "auto":
            return cls(1, None)
        if text.isdigit():
            return cls.parse(int(text))
        lo, sep, hi = text.partition(":")
        if sep and lo.isdigit() and hi.isdigit() and 1 <= int(lo) <= int(hi):
            return cls(int(lo), int(hi))
        raise ValueError(f"predictors must be N, MIN:MAX (1 <= MIN <= MAX) or auto, got {value!r}")

    @staticmethod
    def text(text: str) -> int | str:
        """``--predictors`` on the command line: N as an int, MIN:MAX or auto as given."""
        return int(text) if text.strip().isdigit() else text

    @property
    def fixed(self) -> bool:
        return self.low == self.high


def predictor_threads(pool, gpus_per_actor: float, cluster: dict) -> int:
    """torch threads of each GPU-stage actor: the actors share the cluster's cores. ``auto``
    places one per CPU_PREDICTOR_THREADS CPUs (without GPUs); a count N, or MIN:MAX up to
    MAX, splits the cluster's CPUs N ways, so that the actors' threads together do not
    exceed the cores (the decode and fit tasks run one thread each: Ray's default for a
    fractional CPU, and the fit's BLAS is held to one)."""
    cpus = max(1, int(cluster.get("CPU", 1.0)))
    if pool.high is None:  # never more threads than the cluster has cores (4 on 2 cores spin)
        return min(CPU_PREDICTOR_THREADS, cpus)
    return max(1, cpus // pool.high)


def separation_group(separation_batch: int | None, separator: str, audio_used: bool, gpus_per_actor: float) -> int:
    """Tracks an actor separates together (``--separation-batch``): 8 where demucs runs on
    GPUs (a GPU needs the batch), else 1."""
    if separation_batch is not None:
        return separation_batch
    return 8 if separator == "demucs" and audio_used and gpus_per_actor > 0 else 1


def in_flight(tracks_in_flight: int | None, actors: int, group: int) -> int:
    """Tracks in the pipeline at most: two groups per actor (one being explained, one
    decoding and separating) and two more, unless ``--tracks-in-flight`` says."""
    return tracks_in_flight or 2 * max(1, actors) * group + 2


def pool_target(pool, gpus_per_actor: float, cluster: dict) -> int:
    """How many GPU-stage actors the pool wants on a cluster with ``cluster`` resources
    (``ray.cluster_resources()``): ``auto`` follows the cluster (floor(GPUs / GPUs per
    actor), or CPUs / CPU_PREDICTOR_THREADS without GPUs), within the pool's bounds."""
    if pool.high is not None:
        return pool.high
    if gpus_per_actor > 0:
        can = int(cluster.get("GPU", 0.0) / gpus_per_actor + 1e-9)
    else:
        can = int(cluster.get("CPU", 0.0) // CPU_PREDICTOR_THREADS)
    return max(pool.low, can)


@dataclass(frozen=True)
class Demand:
    stage: str
    count: int       # actors (or concurrent tasks)
    cpus: float      # each
    gpus: float      # each


@dataclass(frozen=True)
class NodeType:
    name: str
    cpus: float
    gpus: float
    max_nodes: int   # how many of them the cluster can have (max_workers; 1 for the head)


def demands(cfg) -> list[Demand]:
    """The actors and tasks ``cfg`` (an :class:`~pipeline.config.ExplainConfig`) needs placed
    (an elastic GPU-stage pool: its minimum; more start as the cluster has room)."""
    gpu = cfg.gpus_per_predictor > 0
    out = [Demand("predict", cfg.pool.low, PREDICTOR_CPUS_WITH_GPU if gpu else PREDICTOR_CPUS_CPU_ONLY,
                  cfg.gpus_per_predictor),
           Demand("fit", cfg.surrogate_workers, SURROGATE_CPUS, 0.0),
           Demand("decode", 1, DECODE_CPUS, 0.0)]  # at least one decode task must run
    return out  # demucs runs inside the GPU stage: no actor of its own


def placement_problems(wanted: list[Demand], node_types: list[NodeType]) -> list[str]:
    """Human lines saying why ``wanted`` can never be placed on ``node_types`` (empty: it can)."""
    problems = []
    nodes: list[list] = [[t.cpus, t.gpus, t.name] for t in node_types for _ in range(t.max_nodes)]
    units = sorted(((d.gpus, d.cpus, d.stage) for d in wanted for _ in range(d.count)), reverse=True)
    for gpus, cpus, stage in units:
        if not any(t.cpus >= cpus and t.gpus >= gpus for t in node_types):
            problems.append(f"a {stage} actor needs {cpus:g} CPU + {gpus:g} GPU, more than any node type has "
                            f"({', '.join(f'{t.name}: {t.cpus:g} CPU + {t.gpus:g} GPU' for t in node_types)})")
            continue
        for n in nodes:
            if n[0] >= cpus - 1e-9 and n[1] >= gpus - 1e-9:
                n[0] -= cpus
                n[1] -= gpus
                break
        else:
            problems.append(f"no room for a {stage} actor ({cpus:g} CPU + {gpus:g} GPU)")
    if problems:
        need_gpu = sum(d.count * d.gpus for d in wanted)
        need_cpu = sum(d.count * d.cpus for d in wanted)
        have_gpu = sum(t.gpus * t.max_nodes for t in node_types)
        have_cpu = sum(t.cpus * t.max_nodes for t in node_types)
        problems.append("asked: " + " + ".join(f"{d.count} {d.stage} x ({d.cpus:g} CPU, {d.gpus:g} GPU)"
                                               for d in wanted)
                        + f" = {need_cpu:g} CPU, {need_gpu:g} GPU; the cluster can have at most "
                          f"{have_cpu:g} CPU, {have_gpu:g} GPU")
    return problems


def node_types_of_cluster_yaml(cfg: dict) -> list[NodeType]:
    """Node types of a Ray cluster-launcher config (``ray up``)."""
    types = cfg["available_node_types"]
    out = []
    for name, t in types.items():
        res = t.get("resources", {})
        count = 1 if name == cfg.get("head_node_type") else int(t.get("max_workers", cfg.get("max_workers", 0)))
        out.append(NodeType(name, float(res.get("CPU", 0)), float(res.get("GPU", 0)), count))
    return out


def node_types_of_rayjob(job: dict) -> list[NodeType]:
    """Node types of a KubeRay RayJob: the head (its ``num-cpus``) and each worker group
    (``maxReplicas``, else ``replicas``); resources from rayStartParams or container limits."""
    spec = job["spec"]["rayClusterSpec"]

    def group(name: str, g: dict, count: int) -> NodeType:
        params = g.get("rayStartParams", {})
        limits = g["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
        cpus = float(params.get("num-cpus", limits.get("cpu", 0)))
        gpus = float(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))
        return NodeType(name, cpus, gpus, count)

    out = [group("head", spec["headGroupSpec"], 1)]
    for g in spec.get("workerGroupSpecs", []):
        out.append(group(g["groupName"], g, int(g.get("maxReplicas", g.get("replicas", 1)))))
    return out


def autoscaler_config_path() -> str | None:
    """The cluster config the autoscaler on this node runs with (``ray up`` and ``ray start
    --autoscaling-config`` pass it to the head's monitor process), or None: no autoscaler
    here, or the driver is not on the head."""
    from pathlib import Path
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            args = (d / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not any(a.endswith("monitor.py") for a in args):
            continue
        for i, a in enumerate(args):
            if a.startswith("--autoscaling-config="):
                return a.split("=", 1)[1] or None
            if a == "--autoscaling-config" and i + 1 < len(args):
                return args[i + 1] or None
    return None


def cluster_node_types(local: bool) -> tuple[list[NodeType], str]:
    """The cluster as it can ever be, and where that was read from: a private local Ray's one
    node; else the node types and ``max_workers`` of the autoscaler's config when it can be
    found, else the nodes alive now (a cluster without an autoscaler does not grow). For a
    running cluster Ray must be initialised."""
    if local:
        return local_node_types(), "this machine (a private local Ray)"
    path = autoscaler_config_path()
    if path:
        import os

        import yaml
        try:
            with open(os.path.expanduser(path)) as f:
                return node_types_of_cluster_yaml(yaml.safe_load(f)), f"the autoscaler's config {path}"
        except (OSError, KeyError, ValueError, TypeError, AttributeError):
            pass
    import ray
    return ([NodeType(n.get("NodeName") or n["NodeManagerHostname"], n["Resources"].get("CPU", 0),
                      n["Resources"].get("GPU", 0), 1) for n in ray.nodes() if n["Alive"]],
            "the nodes alive now (no autoscaler config found on this node)")


def local_node_types() -> list[NodeType]:
    """The one node of a private local Ray (``--address local``): this machine's CPUs and
    CUDA devices, or the resources of the Ray this process already runs."""
    import os
    try:
        import ray
        if ray.is_initialized():
            res = ray.cluster_resources()
            return [NodeType("local", float(res.get("CPU", 0)), float(res.get("GPU", 0)), 1)]
    except ImportError:
        pass
    import torch
    return [NodeType("local", float(os.cpu_count() or 1), float(torch.cuda.device_count()), 1)]


def plan_text(wanted: list[Demand], node_types: list[NodeType], rows: int, done: int, work: int) -> str:
    lines = ["stage      actors  CPU each  GPU each"]
    lines += [f"{d.stage:<10} {d.count:>6}  {d.cpus:>8g}  {d.gpus:>8g}" for d in wanted]
    lines.append("cluster: " + ", ".join(f"{t.max_nodes} x {t.name} ({t.cpus:g} CPU, {t.gpus:g} GPU)"
                                         for t in node_types))
    lines.append(f"rows: {rows} in the catalogue, {done} already committed, {work} to explain")
    return "\n".join(lines)
