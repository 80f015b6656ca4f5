"""Job logs: text or JSON lines; off a terminal, progress is a periodic status record."""
from __future__ import annotations

import io
import json
import time

from pipeline.logs import configure
from pipeline.progress import Progress


def test_json_status_records_at_the_given_interval():
    stream = io.StringIO()
    configure("INFO", "json", stream=stream)
    bar = Progress(10, "tracks", stream=io.StringIO(), status_every=0.2)  # a StringIO is no terminal
    for i in range(1, 4):
        bar.update(i, 0, extra="5 masks/s")
        time.sleep(0.25 if i < 3 else 0)
    bar.update(4)  # too soon after the last one: no record
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["done"] for r in records] == [1, 2, 3]
    assert records[-1]["logger"] == "musiclime.progress" and records[-1]["total"] == 10
    assert records[-1]["extra"] == "5 masks/s" and records[-1]["level"] == "INFO" and records[-1]["time"].endswith("Z")
    configure("WARNING", "text", stream=stream)
    bar.update(10)
    assert stream.getvalue().count("\n") == 3  # INFO is below WARNING
