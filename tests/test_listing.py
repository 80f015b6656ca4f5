"""Content keys on object stores from listings: the keys are exactly those HEAD requests
give, for far fewer requests (counted by the S3 test server's own request recorder)."""
from __future__ import annotations

import json
import urllib.request

import pyarrow.fs as pafs

from musiclime.listing import LIST_MIN, Listings
from pipeline.catalogue import content_keys


def recorded(endpoint: str, action):
    """The requests the S3 server received while ``action()`` ran: [(method, path)]."""
    def call(path: str, method: str = "POST") -> bytes:
        return urllib.request.urlopen(urllib.request.Request(endpoint + path, method=method)).read()
    call("/moto-api/recorder/reset-recording")
    call("/moto-api/recorder/start-recording")
    try:
        action()
    finally:
        call("/moto-api/recorder/stop-recording")
    lines = call("/moto-api/recorder/download-recording", "GET").decode().splitlines()
    return [(r["method"], r["url"]) for r in map(json.loads, lines) if "/moto-api/" not in r["url"]]


def test_keys_from_listings_equal_keys_from_heads_for_fewer_requests(s3):
    fs = pafs.S3FileSystem(endpoint_override=s3["AWS_ENDPOINT_URL"])
    rows = []
    for album, n in (("big", 30), ("small", 3)):
        for i in range(n):
            for kind in ("audio", "lyrics"):
                path = f"lib/listing/{album}/{i:02d}.{'flac' if kind == 'audio' else 'txt'}"
                with fs.open_output_stream(path) as f:
                    f.write(b"x" * (100 + i))
        rows += [{"track_id": f"{album}-{i}", "audio_path": f"s3://lib/listing/{album}/{i:02d}.flac",
                  "lyrics_path": f"s3://lib/listing/{album}/{i:02d}.txt"} for i in range(n)]
    rows.append({"track_id": "gone", "audio_path": "s3://lib/listing/big/missing.flac"})  # listed folder, no file
    heads: list = []
    listed: list = []
    listings = Listings()
    requests_before = recorded(s3["AWS_ENDPOINT_URL"], lambda: heads.extend(content_keys(rows)))
    requests_after = recorded(s3["AWS_ENDPOINT_URL"], lambda: listed.extend(content_keys(rows, listings=listings)))
    assert listed == heads  # every key exactly what HEAD gives, the missing file's included
    assert len(set(heads)) == len(rows)
    # 67 files: one HEAD each before; now one LIST for the big folder (60 files), HEADs for the
    # small one (6 files < LIST_MIN) and for the file the listing does not show
    assert len(requests_before) >= 67
    assert listings.lists == 1 and listings.heads == 6 + 1 and 6 < LIST_MIN
    assert len(requests_after) <= 1 + 7 + 1, requests_after  # a missing file may cost HEAD + LIST
    # a later batch of the same run reads the folder from the listing it holds
    again = recorded(s3["AWS_ENDPOINT_URL"], lambda: content_keys(rows[:5], listings=listings))
    assert again == [] and listings.lists == 1


def test_listings_are_bounded_and_local_files_are_stat_as_before(tmp_path):
    listings = Listings(max_objects=25)
    fs = pafs.LocalFileSystem()
    for folder in ("a", "b", "c"):
        (tmp_path / folder).mkdir()
        for i in range(10):
            (tmp_path / folder / f"{i}.wav").write_bytes(b"x" * i)
    for folder in ("a", "b", "c"):
        items = [(str(tmp_path / folder / f"{i}.wav"), str(tmp_path / folder / f"{i}.wav")) for i in range(10)]
        got = listings.stats(fs, items)
        assert [got[loc][0] for loc, _ in items] == list(range(10))
    assert listings.held <= 25 and listings.lists == 3  # the oldest folder was let go
    rows = [{"track_id": "t", "audio_path": str(tmp_path / "a" / "3.wav")}]
    assert content_keys(rows, listings=Listings()) == content_keys(rows)  # local paths: stat, no listing
