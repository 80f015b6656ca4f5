"""The resource arithmetic of every command README shows, against the config shown with it:
a command the shipped cluster can never place fails here, not at night in ray.wait."""
from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import yaml

from pipeline.commands.explain import add_arguments
from pipeline.config import from_arguments
from pipeline.resources import (
    Demand,
    NodeType,
    demands,
    node_types_of_cluster_yaml,
    node_types_of_rayjob,
    placement_problems,
)

ROOT = Path(__file__).resolve().parents[1]


def explain_config(command: str):
    words = shlex.split(command.replace("\\\n", " "))
    args = words[words.index("explain") + 1:]
    p = argparse.ArgumentParser()
    add_arguments(p)
    ns = p.parse_args(args)
    return from_arguments(ns)


def readme_cluster_commands() -> list[str]:
    section = (ROOT / "docs" / "cluster.md").read_text()
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    joined = block.replace("\\\n", " ")
    cmds = [line.split("#")[0] for line in joined.splitlines() if "musiclime explain" in line]
    assert cmds and "ray up cluster.yaml" in block
    return cmds


def test_readme_cluster_command_fits_cluster_yaml():
    types = node_types_of_cluster_yaml(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    for cmd in readme_cluster_commands():
        assert placement_problems(demands(explain_config(cmd)), types) == [], cmd


def test_rayjob_entrypoint_fits_its_cluster():
    job = yaml.safe_load((ROOT / "deploy" / "rayjob.yaml").read_text())
    types = node_types_of_rayjob(job)
    assert types[0].name == "head" and types[0].cpus == 0 and types[0].gpus == 0  # the head only drives
    assert placement_problems(demands(explain_config(job["spec"]["entrypoint"])), types) == []
    # KubeRay's service and submitter reach the head's dashboard from inside the cluster
    assert job["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"


def test_cluster_yaml_head_is_driver_only_and_dashboard_local():
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    assert cfg["available_node_types"][cfg["head_node_type"]]["resources"] == {"CPU": 0}
    assert all("--dashboard-host=127.0.0.1" in c for c in cfg["head_start_ray_commands"] if "ray start" in c)


def test_plans_that_cannot_be_placed_say_why():
    gpu_nodes = [NodeType("head", 0, 0, 1), NodeType("gpu", 4, 1, 4), NodeType("cpu", 16, 0, 16)]
    # demucs runs inside the GPU stage: 4 predictors x 1 GPU fit 4 GPU workers, 5 do not
    four = explain_config("musiclime explain c --out o --separator demucs --predictors 4 --gpus-per-predictor 1")
    assert placement_problems(demands(four), gpu_nodes) == []
    five = explain_config("musiclime explain c --out o --separator demucs --predictors 5 --gpus-per-predictor 1")
    problems = placement_problems(demands(five), gpu_nodes)
    assert problems and "5 GPU" in problems[-1] and "at most 272 CPU, 4 GPU" in problems[-1]
    assert placement_problems([Demand("predict", 1, 1, 2)], gpu_nodes)[0].startswith("a predict actor needs")
    # fractional GPUs pack: two 0.5-GPU predictors per GPU
    half = explain_config("musiclime explain c --out o --predictors 8 --gpus-per-predictor 0.5")
    assert placement_problems(demands(half), gpu_nodes) == []
    assert placement_problems(demands(half), [NodeType("gpu", 4, 1, 3)]) != []  # 8 halves on 3 GPUs


def _catalogue(demo_library, tmp_path, n=4):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.catalogue import read_catalogue
    rows = [{k: v for k, v in r.items() if k != "catalogue_row"} for r in read_catalogue(
        demo_library / "catalogue.parquet", limit=n)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "cat.parquet")
    return tmp_path / "cat.parquet"


def test_dry_run_prints_the_plan_and_refuses_what_cannot_be_placed(demo_library, tmp_path):
    import subprocess
    import sys
    musiclime = str(Path(sys.executable).parent / "musiclime")
    cat = _catalogue(demo_library, tmp_path)
    base = [musiclime, "explain", str(cat), "--out", str(tmp_path / "out"), "--separator", "provided", "--dry-run"]
    ok = subprocess.run(base + ["--predictors", "2"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-1500:]
    assert "predict         2       0.5         0" in ok.stdout
    assert "rows: 4 in the catalogue, 0 already committed, 4 to explain" in ok.stdout
    assert not (tmp_path / "out" / "run.json").exists()  # nothing was run or written
    gpu = subprocess.run(base + ["--gpus-per-predictor", "1"], capture_output=True, text=True, timeout=120)
    assert gpu.returncode == 2 and "can never be placed" in gpu.stderr and "0 GPU" in gpu.stderr


def test_a_local_run_that_can_never_be_placed_exits_2_instead_of_waiting(demo_library, plugin_path, tmp_path):
    """Before, an actor asking for a GPU on a GPU-less machine left the driver in ray.wait forever."""
    import time

    from pipeline.config import ExplainConfig
    from pipeline.driver import run_explain
    cat = _catalogue(demo_library, tmp_path)
    t0 = time.perf_counter()
    s = run_explain(ExplainConfig(catalogue=str(cat), model="mlplugins:make", out=str(tmp_path / "out"),
                                  separator="provided", gpus_per_predictor=1.0, run_id="gpu"), show_progress=False)
    assert s.exit_code == 2 and "can never be placed" in s.message and "GPU" in s.message
    assert time.perf_counter() - t0 < 60


def test_readme_ray_start_commands_and_their_plan():
    """The second cluster block: the nodes its `ray start` lines make (two GPU machines, as in
    the plan shown below it) place the command's pool; 3 GPU-stage actors do not."""
    from pipeline.resources import pool_target
    section = (ROOT / "docs" / "cluster.md").read_text()
    block = re.findall(r"```bash\n(.*?)```", section, re.S)[1].replace("\\\n", " ")

    def node(line: str, name: str, count: int) -> NodeType:
        w = shlex.split(line.split("#")[0])
        return NodeType(name, float(w[w.index("--num-cpus") + 1]), float(w[w.index("--num-gpus") + 1]), count)
    lines = [ln for ln in block.splitlines() if ln.startswith("ray start")]
    types = [node(lines[0], "head", 1), node(lines[1], "gpu", 2)]
    assert "--head" in lines[0] and types[0].cpus == 0 and types[0].gpus == 0  # the head only drives
    cmd = next(ln for ln in block.splitlines() if "musiclime explain" in ln)
    cfg = explain_config(cmd.split("RAY_ADDRESS=HEAD:6390 ")[1])
    assert placement_problems(demands(cfg), types) == []
    assert pool_target(cfg.pool, cfg.gpus_per_predictor, {"GPU": 2.0, "CPU": 8.0}) == 2
    assert "up to 2 on this cluster" in section
    three = explain_config(cmd.split("RAY_ADDRESS=HEAD:6390 ")[1].replace("--predictors auto", "--predictors 3"))
    problems = placement_problems(demands(three), types)
    assert problems and "= 3.5 CPU, 3 GPU; the cluster can have at most 8 CPU, 2 GPU" in problems[-1]


def test_predictor_threads_split_the_clusters_cores():
    """GPU-stage actors' torch threads: one auto actor per CPU_PREDICTOR_THREADS CPUs; a count
    or MIN:MAX splits the cluster's CPUs (not the driver's) MAX ways, so an elastic CPU pool
    of 8 on 4 cores no longer runs 8 x 4 threads."""
    from pipeline.config import PoolSize
    from pipeline.resources import CPU_PREDICTOR_THREADS, pool_target, predictor_threads
    cluster = {"CPU": 4.0}
    for text in ("1", "2", "4", "1:8", "auto"):
        pool = PoolSize.parse(text)
        threads = predictor_threads(pool, 0.0, cluster)
        assert threads >= 1 and threads * pool_target(pool, 0.0, cluster) <= max(4, pool_target(pool, 0.0, cluster))
    assert predictor_threads(PoolSize.parse("1:8"), 0.0, cluster) == 1
    assert predictor_threads(PoolSize.parse("2"), 0.0, {"CPU": 64.0}) == 32
    assert predictor_threads(PoolSize.parse("auto"), 0.0, {"CPU": 64.0}) == CPU_PREDICTOR_THREADS
    assert predictor_threads(PoolSize.parse("auto"), 0.0, {"CPU": 2.0}) == 2  # a 2-core machine: not 4
