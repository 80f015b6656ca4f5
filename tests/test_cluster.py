"""Deployment: the cluster-launcher config validates, and the same command runs as a Ray
job against a `ray start --head` cluster on 127.0.0.1 (started and stopped here)."""
import copy
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import duckdb
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


def test_cluster_yaml_passes_rays_validation():
    from ray.autoscaler._private.util import fillout_defaults, validate_config
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(fillout_defaults(copy.deepcopy(cfg)))
    assert {"gpu_worker", "cpu_worker"} <= set(cfg["available_node_types"])
    assert cfg["available_node_types"]["gpu_worker"]["resources"]["GPU"] >= 1
    bad = copy.deepcopy(cfg)
    bad["available_node_types"]["gpu_worker"]["typo_key"] = 1
    with pytest.raises(Exception):
        validate_config(fillout_defaults(bad))
    job = yaml.safe_load((ROOT / "deploy" / "rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and "musiclime explain" in job["spec"]["entrypoint"]


def _free_port() -> int:
    """A free port for ``ray start``, from 20000-31999: outside the ephemeral range that
    outgoing connections take ports from (32768+) and Ray's worker ports (10002-19999), so
    nothing else running (another xdist worker's Ray) grabs it before Ray binds it; each
    xdist worker draws from its own half."""
    import random
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0) % 2
    low = 20000 + 6000 * worker
    for _ in range(1000):
        port = random.randrange(low, low + 6000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-31999")


def _start_head(env: dict) -> tuple[subprocess.Popen, str | None, str]:
    """``ray start --head`` on free ports (all distinct); its dashboard's URL once ``ray job
    list`` answers there, or None after 120 s."""
    ports: set[int] = set()
    while len(ports) < 5:
        ports.add(_free_port())
    port, dash, agent, grpc, metrics = ports
    temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # Ray's unix sockets need a short path
    # free ports for the head's agent too: the test session's own Ray holds the defaults
    head = subprocess.Popen([RAY, "start", "--head", "--block", "--num-cpus", "2", "--port", str(port),
                             "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--include-dashboard",
                             "true", "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port",
                             str(grpc), "--metrics-export-port", str(metrics), "--temp-dir", temp],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 120
    while time.time() < deadline and head.poll() is None:
        if subprocess.run([RAY, "job", "list", "--address", url], capture_output=True, env=env).returncode == 0:
            return head, url, temp
        time.sleep(1)
    return head, None, temp


def _stop_head(head: subprocess.Popen, temp: str) -> str:
    """Stop the head; what it printed and the tail of its dashboard's log."""
    try:
        os.killpg(head.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        printed = head.communicate(timeout=60)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        printed = ""
    logs = sorted(Path(temp).glob("session_*/logs/dashboard.log"))
    tail = logs[-1].read_text(errors="replace")[-2000:] if logs else "(no dashboard.log)"
    shutil.rmtree(temp, ignore_errors=True)
    return f"{printed}\n--- dashboard.log ---\n{tail}"


def test_ray_job_submit_against_a_head(tmp_path, plugin_path, demo_library):
    work = tmp_path / "job"
    work.mkdir()
    shutil.copy(plugin_path / "mlplugins.py", work / "mlplugins.py")
    out = tmp_path / "out"
    # Ray >= 2.59 authenticates clients with a token: the head and the CLI share ours
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))
    head, url, temp = _start_head(env)
    if url is None:  # its dashboard never answered: say why, then one more head on other ports
        warnings.warn(f"the first head's dashboard never answered: {_stop_head(head, temp)[-2000:]}", stacklevel=1)
        head, url, temp = _start_head(env)
        assert url is not None, _stop_head(head, temp)[-3000:]
    try:
        submit = [RAY, "job", "submit", "--address", url, "--working-dir", str(work), "--",
                  sys.executable, "-m", "pipeline.cli", "explain", str(demo_library / "catalogue.parquet"),
                  "--model", "mlplugins:make", "--separator", "provided", "--out", str(out), "--limit", "4",
                  "--num-samples", "100", "--run-id", "job", "--address", "auto", "--no-progress"]
        for _ in range(30):  # the head's job agent comes up a little after its dashboard
            r = subprocess.run(submit, capture_output=True, text=True, env=env, timeout=600)
            if r.returncode == 0 or "No available agent" not in r.stdout + r.stderr:
                break
            time.sleep(2)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "succeeded" in (r.stdout + r.stderr).lower()
        n = duckdb.connect().execute(
            f"select count(distinct track_id) from read_parquet('{out}/tracks/**/*.parquet', hive_partitioning=true)"
        ).fetchone()[0]
        assert n == 4
    finally:
        _stop_head(head, temp)
