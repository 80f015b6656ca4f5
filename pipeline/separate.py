"""Separating a whole catalogue into the stem cache, locally or as Ray tasks."""
from __future__ import annotations

import time
from pathlib import Path


def separate_row(row: dict, separator_name: str, options: dict, cache_dir: str, sample_rate: int,
                 max_seconds: float | None, _separators: dict = {}) -> dict:  # noqa: B006 (per-process memo)
    """Decode one row's audio, separate it through the cache. Never raises for bad input:
    returns a record with ``status`` ``ok`` or ``error``."""
    from musiclime.audio_io import read_audio
    from musiclime.errors import InputError
    from musiclime.separation import StemCache, get_separator
    t0 = time.perf_counter()
    rec = {"track_id": row["track_id"], "catalogue_row": row["catalogue_row"]}
    try:
        key = (separator_name, tuple(sorted(options.items())))
        if key not in _separators:
            _separators[key] = get_separator(separator_name, **options)
        sep = _separators[key]
        audio, flags = read_audio(row.get("audio_path") or "", sample_rate, max_seconds=max_seconds)
        cache = StemCache(cache_dir)
        stems, hit = cache.separate(sep, audio, sample_rate)
        rec.update(status="ok", cache_hit=hit, cache_key=cache.key(audio, sample_rate, sep),
                   n_samples=int(stems.shape[1]), flags=flags, error_type=None, message=None)
    except InputError as e:
        rec.update(status="error", cache_hit=None, cache_key=None, n_samples=None, flags=[],
                   error_type=e.code, message=e.message)
    rec["seconds"] = time.perf_counter() - t0
    return rec


def separate_catalogue(rows: list[dict], separator_name: str, options: dict, cache_dir: str | Path,
                       sample_rate: int, max_seconds: float | None = None, address: str | None = None,
                       in_flight: int = 8, progress=None) -> list[dict]:
    """Separate every row into ``cache_dir``; Ray tasks when ``address`` is given."""
    cache_dir = str(cache_dir)
    out: list[dict] = []
    failed = 0

    def done(rec):
        nonlocal failed
        out.append(rec)
        failed += rec["status"] != "ok"
        if progress:
            progress(len(out) - failed, failed)

    if address is None:
        for r in rows:
            done(separate_row(r, separator_name, options, cache_dir, sample_rate, max_seconds))
    else:
        import ray

        from pipeline.ray_runtime import init_ray
        init_ray(address)
        task = ray.remote(num_gpus=0)(separate_row)
        pending = []
        for r in rows:
            pending.append(task.remote(r, separator_name, options, cache_dir, sample_rate, max_seconds))
            if len(pending) >= in_flight:  # backpressure: bounded tasks in flight
                ready, pending = ray.wait(pending, num_returns=1)
                done(ray.get(ready[0]))
        for ref in pending:
            done(ray.get(ref))
    return sorted(out, key=lambda r: r["catalogue_row"])
