"""Planning an incremental night on S3: the content keys of every catalogue row, from one
HEAD request per file (before) or from listings of the files' folders (after), on the S3
test server (moto, started here). Requests are counted by the server's own recorder.

    python bench/bench_listing.py --tracks 100000

A library of albums (12 tracks a folder, audio and a lyrics file each) under one prefix;
the catalogue's rows in album order, planned in batches of 4,096 rows as the driver does.
Results: bench/results/listing.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_result  # noqa: E402

BATCH = 4096


def _call(endpoint: str, path: str, method: str = "POST") -> bytes:
    return urllib.request.urlopen(urllib.request.Request(endpoint + path, method=method)).read()


def count_requests(endpoint: str, action) -> tuple[int, float]:
    _call(endpoint, "/moto-api/recorder/reset-recording")
    _call(endpoint, "/moto-api/recorder/start-recording")
    t0 = time.perf_counter()
    try:
        action()
    finally:
        seconds = time.perf_counter() - t0
        _call(endpoint, "/moto-api/recorder/stop-recording")
    n = _call(endpoint, "/moto-api/recorder/download-recording", "GET").count(b"\n")
    _call(endpoint, "/moto-api/recorder/reset-recording")
    return n, seconds


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tracks", type=int, default=100_000)
    args = ap.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    import tempfile
    os.environ.setdefault("MOTO_RECORDER_FILEPATH", os.path.join(tempfile.mkdtemp(), "moto_recording"))
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=endpoint, AWS_ALLOW_HTTP="true")
    import pyarrow.fs as pafs

    from musiclime.listing import Listings
    from pipeline.catalogue import content_keys
    fs = pafs.S3FileSystem(endpoint_override=endpoint, allow_bucket_creation=True)
    fs.create_dir("library")
    rows = [{"track_id": f"t{i}", "audio_path": f"s3://library/music/album{i // 12:06d}/{i % 12:02d}.m4a",
             "lyrics_path": f"s3://library/music/album{i // 12:06d}/{i % 12:02d}.txt"} for i in range(args.tracks)]

    # The library is put straight into the server's store (its backend lives in this process):
    # 200,000 PUTs over HTTP took longer than the measured part. What is measured goes over HTTP.
    from moto.s3.models import s3_backends
    backend = next(b["global"] for b in s3_backends.values() if "library" in b["global"].buckets)
    t0 = time.perf_counter()
    for r in rows:
        for c in ("audio_path", "lyrics_path"):
            backend.put_object("library", r[c].removeprefix("s3://library/"), b"x" * 64)
    print(f"{2 * args.tracks} objects written in {time.perf_counter() - t0:.0f} s", flush=True)
    keys: dict[str, list[str]] = {"heads": [], "listings": []}

    def plan(name: str, listings=None):
        def run() -> None:
            for b in range(0, len(rows), BATCH):
                keys[name] += content_keys(rows[b:b + BATCH], listings=listings)
        return run
    before = count_requests(endpoint, plan("heads"))
    print(f"before: {before[0]} requests, {before[1]:.1f} s", flush=True)
    listings = Listings()
    after = count_requests(endpoint, plan("listings", listings))
    print(f"after: {after[0]} requests, {after[1]:.1f} s", flush=True)
    server.stop()
    assert keys["heads"] == keys["listings"], "listings changed a content key"
    path = write_result("listing", {
        "tracks": args.tracks, "files": 2 * args.tracks, "files_per_folder": 24, "batch_rows": BATCH,
        "before": {"requests": before[0], "seconds": round(before[1], 1)},
        "after": {"requests": after[0], "seconds": round(after[1], 1), "lists": listings.lists,
                  "heads": listings.heads, "objects_held": listings.held},
        "request_ratio": round(before[0] / max(1, after[0]), 1), "speedup": round(before[1] / max(1e-9, after[1]), 1),
        "keys_equal": True})
    return json.loads(Path(path).read_text())


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
