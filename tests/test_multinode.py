"""A night on a real multi-node Ray on 127.0.0.1: `ray start --head` (driver-only) and GPU
worker nodes started with `ray start --num-gpus 1` (logical GPUs: placement and pooling are
Ray's, the model runs on CPU torch). `musiclime explain --address auto --predictors auto`
grows its GPU-stage pool onto a node added mid-run, and survives the raylet of the first
node being SIGKILLed: every row once, weights identical to a run on one node."""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.test_guarantees import exactly_once, q, scan

RAY = str(Path(sys.executable).parent / "ray")
MUSICLIME = str(Path(sys.executable).parent / "musiclime")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ports() -> list[str]:
    """Free ports for a node's own servers: several raylets share this host."""
    return ["--node-manager-port", str(_free_port()), "--object-manager-port", str(_free_port()),
            "--metrics-export-port", str(_free_port()), "--dashboard-agent-grpc-port", str(_free_port()),
            "--dashboard-agent-listen-port", str(_free_port()), "--runtime-env-agent-port", str(_free_port())]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _descendants(root: int) -> list[int]:
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


class Cluster:
    def __init__(self, env: dict):
        self.env, self.procs = env, {}
        self.temp = tempfile.mkdtemp(prefix="mn", dir="/tmp")  # Ray's unix sockets need a short path
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"

    def start(self, name: str, *args: str) -> None:
        cmd = [RAY, "start", "--block", "--node-name", name, "--temp-dir", self.temp, *_ports(), *args]
        self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                            start_new_session=True)

    def head(self) -> None:
        self.start("head", "--head", "--port", str(self.port), "--num-cpus", "0", "--num-gpus", "0",
                   "--include-dashboard", "false")

    def worker(self, name: str) -> None:
        self.start(name, "--address", self.address, "--num-cpus", "2", "--num-gpus", "1")

    def gpus(self) -> float:
        code = ("import ray, json; ray.init(address='auto', logging_level='ERROR'); "
                "print(json.dumps(ray.cluster_resources().get('GPU', 0)))")
        r = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120)
        return float(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 and r.stdout.strip() else -1.0

    def wait_gpus(self, n: float, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.gpus() == n:
                return
            time.sleep(1)
        raise TimeoutError(f"the cluster never had {n} GPUs")

    def kill_raylet(self, name: str) -> int:
        raylets = [p for p in _descendants(self.procs[name].pid) if _comm(p) == "raylet"]
        assert len(raylets) == 1, raylets
        os.kill(raylets[0], signal.SIGKILL)
        return raylets[0]

    def stop(self) -> None:
        for p in self.procs.values():
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        subprocess.run(["pkill", "-9", "-f", self.temp], capture_output=True)


@pytest.fixture
def cluster(plugin_path):
    # Ray >= 2.59 authenticates clients with a token; node deaths are noticed within ~3 s
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16),
               RAY_health_check_period_ms="1000", RAY_health_check_failure_threshold="3",
               PYTHONPATH=os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")]))
    c = Cluster(env)
    c.head()
    env["RAY_ADDRESS"] = c.address
    yield c
    c.stop()


def _explain(demo_library, out, run_id: str, *extra: str) -> list[str]:
    return [MUSICLIME, "explain", str(demo_library / "catalogue.parquet"), "--model", "mlplugins:make",
            "--separator", "provided", "--out", str(out), "--num-samples", "1500", "--limit", "30",
            "--run-id", run_id, "--commit-every", "1", "--no-progress", "--address", "auto",
            "--predictors", "auto", "--gpus-per-predictor", "1", "--log-format", "json", *extra]


def _committed(out: Path, run_id: str) -> int:
    part = out / "tracks" / f"run_id={run_id}"
    return len(list(part.glob("*.parquet"))) if part.is_dir() else 0


def test_pool_grows_onto_a_new_node_and_survives_a_raylet_kill(cluster, demo_library, tmp_path):
    cluster.worker("gpu-a")
    cluster.wait_gpus(1)
    out = tmp_path / "out"
    log = open(tmp_path / "night.log", "w")
    run = subprocess.Popen(_explain(demo_library, out, "night"), env=cluster.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while _committed(out, "night") < 3 and run.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        cluster.worker("gpu-b")           # the "autoscaler" adds a GPU node mid-run
        cluster.wait_gpus(2)
        grown = lambda: "GPU-stage pool: 2 actor(s)" in (tmp_path / "night.log").read_text()  # noqa: E731
        while not grown() and run.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert grown(), (tmp_path / "night.log").read_text()[-3000:]
        time.sleep(3)                      # the new actor loads its model and takes tracks
        done_before_kill = _committed(out, "night")
        assert run.poll() is None and done_before_kill < 30, "the run ended before the raylet kill"
        cluster.kill_raylet("gpu-a")       # node loss: its actors, workers and objects are gone
        assert run.wait(300) == 0, (tmp_path / "night.log").read_text()[-5000:]
    finally:
        if run.poll() is None:
            run.kill()
        log.close()
    text = (tmp_path / "night.log").read_text()
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    ends = [r["message"] for r in records if r.get("message", "").startswith("GPU-stage actor pid")]
    assert any("on node gpu-b" in m and not m.split(": ")[1].startswith("0 tracks") for m in ends), ends
    exactly_once(out, 30, "night")
    assert not list((out / "errors").rglob("*.parquet"))  # no error rows: node loss is no data error
    # the same rows on the one node left: identical weights
    ref = subprocess.run(_explain(demo_library, out, "one-node"), env=cluster.env, capture_output=True, text=True,
                         timeout=600)
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    qw = (f"select track_id, label, feature, weight from {scan(out, 'explanations')} where run_id='{{}}' "
          f"order by track_id, label, feature")
    assert q(qw.format("night")) == q(qw.format("one-node"))
