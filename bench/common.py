"""Shared pieces of the benchmarks: synthetic inputs, the limit, timing, results."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
LIMIT_GRID = (1, 4, 16, 64, 256)
WORDS = ("fire night love road rain heart city light dance river gold stone sky dream "
         "the and a of in we you my to is on").split()


def synthetic_track(sample_rate: int = 16000, seconds: float = 10.0, n_words: int = 60, seed: int = 0):
    """Four noisy stems ``[4, n_samples]`` with a little structure, and a lyric."""
    rng = np.random.default_rng(seed)
    n = int(sample_rate * seconds)
    t = np.arange(n) / sample_rate
    stems = rng.normal(0, 0.05, size=(4, n)).astype(np.float32)
    stems[0] += 0.3 * np.sin(2 * np.pi * 220 * t).astype(np.float32)
    stems[2] += 0.3 * np.sin(2 * np.pi * 55 * t).astype(np.float32)
    lyric = " ".join(rng.choice(WORDS, size=n_words))
    return stems, lyric


def timed_interleaved(fns: dict[str, Callable[[], object]], repeats: int = 3) -> tuple[dict, dict]:
    """Median wall time per named function, calling them in turn ``repeats`` times so that
    drift on a noisy machine hits all of them alike. Returns (seconds, last results)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    out: dict[str, object] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            out[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, out


def forward_limit(predict: Callable[[torch.Tensor, list[str]], object], audio: torch.Tensor,
                  texts: list[str], grid=LIMIT_GRID, min_seconds: float = 1.5) -> dict:
    """The limit: bare forward rows/s on ready inputs at the best batch size of ``grid``.

    ``audio [N, T]`` and ``texts`` (N of them) are already composed; N >= max(grid).
    """
    per_batch = {bs: 0.0 for bs in grid}
    import torch
    with torch.inference_mode():
        for _ in range(2):  # two passes over the grid, best of each: the machines are noisy
            for bs in grid:
                for _ in range(3):  # warm-up: oneDNN builds its kernels per input shape
                    predict(audio[:bs], texts[:bs])
                rows, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < min_seconds / 2:
                    start = rows % (len(texts) - bs + 1)
                    predict(audio[start:start + bs], texts[start:start + bs])
                    rows += bs
                per_batch[bs] = max(per_batch[bs], rows / (time.perf_counter() - t0))
    best = max(per_batch, key=per_batch.get)
    return {"rows_per_s": per_batch[best], "best_batch": best, "per_batch_rows_per_s": per_batch}


def machine() -> dict:
    import torch
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "machine": platform.machine()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def update_json(path: Path, change, indent: int = 2) -> Path:
    """Replace the JSON file ``path`` with ``change(its content or None)``, under a lock and
    by rename, so that benchmark processes running side by side merge rather than clobber."""
    import fcntl
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        doc = change(json.loads(path.read_text()) if path.exists() else None)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=indent, default=float))
        os.replace(tmp, path)
    return path


def write_result(name: str, result: dict, out_dir: str | Path | None = None, merge=None) -> Path:
    """``<out>/<name>.json``; ``merge(earlier result or None, result)`` decides what of an
    earlier result is kept (default: nothing)."""
    path = Path(out_dir or os.environ.get("OUT") or RESULTS) / f"{name}.json"
    result = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine(), **result}
    return update_json(path, lambda old: merge(old, result) if merge else result)


def add_demo_arguments(ap, tasks=("genre", "emotion")) -> None:
    """``--library`` / ``--model TASK=CKPT``; both default to the cached demo library and
    default models (built as ``musiclime demo`` builds them when missing)."""
    ap.add_argument("--library", default=None, help="demo library (default: the cached one)")
    ap.add_argument("--model", action="append", default=None,
                    help=f"TASK=CHECKPOINT or TASK (default: the cached default model of each of {', '.join(tasks)})")
    ap.set_defaults(_demo_tasks=tuple(tasks))


def demo_assets(args) -> tuple[Path, list[tuple[str, str]]]:
    """The library and ``[(task, checkpoint)]`` that ``add_demo_arguments`` asked for."""
    # "TASK=CHECKPOINT", or a bare "TASK" for the cached default model of that task
    specs = [tuple((m.split("=", 1) + [None])[:2]) for m in args.model] if args.model else \
        [(t, None) for t in args._demo_tasks]
    lib = Path(args.library) if args.library else None
    models = []
    for task, ckpt in specs:
        if ckpt is None or lib is None:
            from pipeline.commands.demo import prepare
            demo_lib, demo_ckpt = prepare(400, 0, 30, task)
            lib, ckpt = lib or demo_lib, ckpt or str(demo_ckpt)
        models.append((task, ckpt))
    return lib, models
