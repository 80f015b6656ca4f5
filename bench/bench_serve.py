"""``musiclime serve`` on a synthetic output of many tracks: what the index costs, and
latency under load (20 clients, each waiting 1 s between requests, for 30 s, against search
and track pages), with the server's memory.

    python bench/bench_serve.py --tracks 1000000 --nights 3 --formats parquet delta

The outputs (about 1 GB each at 1M tracks) are generated once under --data (by
bench/serve_synth.py, not by explaining) and kept; results go to
bench/results/serve.json. The server runs as ``musiclime serve`` in its own process.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote, urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serve_synth import ADJ, CLASSES, WORDS, track_id, write_synthetic  # noqa: E402

RESULTS = Path(__file__).with_name("results") / "serve.json"


def request_mix(n_tracks: int, nights: list[str], rng: random.Random) -> str:
    """One request: half searches (text, filters, sorts, pages), half track pages."""
    if rng.random() < 0.5:
        return f"/track/{quote(track_id(rng.randrange(n_tracks)), safe='')}"
    p: dict = {}
    r = rng.random()
    if r < 0.3:
        p["q"] = rng.choice(ADJ + WORDS)
    elif r < 0.5:
        p["q"] = f"artist {rng.randrange(50000)}"
    elif r < 0.6:
        p["q"] = track_id(rng.randrange(n_tracks))
    if rng.random() < 0.5:
        p["label"] = rng.choice(CLASSES)
    if rng.random() < 0.3:
        p["run"] = rng.choice(nights)
    if rng.random() < 0.2:
        p["topk"] = rng.choice(["yes", "no"])
    if rng.random() < 0.1:
        p["error"] = "any"
    p["sort"] = rng.choice(["night", "prob", "margin"])
    p["page"] = rng.choice([1, 1, 1, 2, 5])
    return "/?" + urlencode(p)


def load_test(host: str, port: int, next_path, clients: int = 20, seconds: float = 30.0, think: float = 1.0,
              headers: dict | None = None, seed: int = 0) -> dict:
    """``clients`` threads, each on its own keep-alive connection: request, wait ``think``
    seconds, repeat, for ``seconds``. Returns latencies' percentiles, throughput, errors."""
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        conn = http.client.HTTPConnection(host, port, timeout=30)
        time.sleep(rng.random() * think)  # spread the clients' phases
        while time.monotonic() < stop:
            path = next_path(rng)
            t0 = time.perf_counter()
            try:
                conn.request("GET", path, headers=headers or {})
                resp = conn.getresponse()
                body = resp.read()
                dt = time.perf_counter() - t0
                with lock:
                    lat.append(dt)
                    if resp.status != 200 or b"<h1>" not in body:
                        errors.append(f"{resp.status} {path}")
            except Exception as e:  # a refused or dropped connection is an error of the run
                with lock:
                    errors.append(f"{type(e).__name__} {path}")
                conn = http.client.HTTPConnection(host, port, timeout=30)
            time.sleep(think)
        conn.close()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    import numpy as np
    a = np.array(lat) if lat else np.zeros(1)
    return {"clients": clients, "seconds": round(wall, 1), "think_s": think, "requests": len(lat),
            "throughput_rps": round(len(lat) / wall, 2), "errors": len(errors), "error_examples": errors[:5],
            "p50_ms": round(1e3 * float(np.percentile(a, 50)), 1), "p95_ms": round(1e3 * float(np.percentile(a, 95)), 1),
            "p99_ms": round(1e3 * float(np.percentile(a, 99)), 1), "max_ms": round(1e3 * float(a.max()), 1)}


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(out: str, cache: str, env: dict | None = None, extra: list[str] | None = None):
    """``musiclime serve`` on a free loopback port: (process, port, seconds to ready)."""
    exe = Path(sys.executable).with_name("musiclime")
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(exe), "serve", out, "--port", "0", "--index-cache", cache, *(extra or [])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    line = proc.stdout.readline() if proc.stdout else ""
    if "serving" not in line:
        proc.kill()
        raise RuntimeError(f"serve did not start: {line}{proc.stderr.read() if proc.stderr else ''}")
    port = int(line.split("http://")[1].split("/")[0].rsplit(":", 1)[1])
    return proc, port, time.perf_counter() - t0


def build_index(out: str, cache: Path) -> tuple[float, float]:
    """The index built as ``musiclime serve`` builds it (a child process): seconds, peak MB."""
    import resource

    from pipeline import output
    from pipeline.serve import index as ix
    fmt = output.existing_format(out) or "parquet"
    folder = cache / ix.fingerprint(out, fmt, output.runs(out))
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline.serve.index", out, fmt, str(folder), "8"], check=True)
    return time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def measure(out: str, cache: Path, n_tracks: int, nights: list[str], clients: int, seconds: float) -> dict:
    import shutil
    shutil.rmtree(cache, ignore_errors=True)
    build_s, peak_build = build_index(out, cache)
    index_mb = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**20
    proc, port, ready_s = start_server(out, str(cache))  # the index from the cache, as every later start
    rss: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            rss.append(_rss_mb(proc.pid))
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        load = load_test("127.0.0.1", port, lambda rng: request_mix(n_tracks, nights, rng), clients, seconds)
        # what the server does when nobody waits: 4 clients back to back, 10 s
        flat = load_test("127.0.0.1", port, lambda rng: request_mix(n_tracks, nights, rng), 4, 10.0, think=0.0,
                         seed=1)
        load.update(saturated_rps=flat["throughput_rps"], saturated_p95_ms=flat["p95_ms"],
                    saturated_errors=flat["errors"])
    finally:
        done.set()
        sampler.join()
        peak = _rss_mb(proc.pid, "VmHWM")
        proc.terminate()
        proc.wait()
    return {"index_build_s": round(build_s, 1), "index_build_peak_rss_mb": round(peak_build),  # its own process
            "index_mb": round(index_mb, 1), "start_from_cache_s": round(ready_s, 1),
            "serving_rss_mb_max": round(max(rss) if rss else float("nan")), "serving_peak_rss_mb": round(peak),
            **load}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tracks", type=int, default=1_000_000)
    ap.add_argument("--nights", type=int, default=3)
    ap.add_argument("--formats", nargs="+", default=["parquet", "delta"])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--data", default=os.path.expanduser("~/.cache/musiclime/bench-serve"))
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--generate-only", action="store_true", help="write the outputs, measure nothing")
    args = ap.parse_args()
    results = {"tracks": args.tracks, "nights": args.nights, "machine": f"{os.cpu_count()} cores",
               "when": time.strftime("%Y-%m-%d"), "formats": {}}
    for fmt in args.formats:
        out = Path(args.data) / f"{fmt}-{args.tracks}-{args.nights}"
        marker = out / ".synthetic.json"
        if not marker.is_file():
            import shutil
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            info = write_synthetic(out, args.tracks, args.nights, fmt=fmt)
            info["generate_s"] = round(time.perf_counter() - t0, 1)
            marker.write_text(json.dumps(info))
        info = json.loads(marker.read_text())
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**30
        files = sum(1 for _ in (out / "explanations").rglob("*.parquet"))
        nights = list(info["nights"])
        print(f"{fmt}: {info['rows']} rows, {size:.2f} GiB, {files} explanation files", flush=True)
        if args.generate_only:
            continue
        r = measure(str(out), Path(args.data) / f"index-{fmt}", args.tracks, nights, args.clients, args.seconds)
        r.update(rows=info["rows"], output_gib=round(size, 2), explanation_files=files)
        print(json.dumps(r), flush=True)
        results["formats"][fmt] = r
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
