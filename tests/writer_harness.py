"""The driver's commit path without Ray or a model, for fault injection: the catalogue
reader, the planner and the writer exactly as ``run_explain`` uses them, with each track's
result made up deterministically from its id (3 features x 1 label).

    python -m tests.writer_harness CATALOGUE OUT RUN_ID [FORMAT]

FORMAT: parquet (default), delta or iceberg (OUT may then be an s3:// URI; iceberg: the
catalog named by ``HARNESS_ICEBERG_CATALOG`` in pyiceberg's configuration, the namespace
named after OUT's last part).

Exit 0 when every catalogue row is accounted for; 1 after an injected exception (the
driver's path: commit what is buffered, then stop); killed by a ``kill`` failpoint.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid

import pyarrow as pa

from musiclime.records import ErrorRecord
from pipeline.catalogue import CatalogueReader
from pipeline.output import open_writer
from pipeline.worklist import make_worklist, outcome, rows_to_do
from schemas.explanations import LOCAL_SCHEMA

FEATURES = ("drums@0", "bass@1", "storm")


def weight(track_id: str, feature: str) -> float:
    h = hashlib.sha256(f"{track_id}/{feature}".encode()).digest()
    return int.from_bytes(h[:4], "little") / 2 ** 32 - 0.5


def result(row: dict, invocation: str) -> tuple[dict, pa.Table]:
    tid = row["track_id"]
    track = dict(track_id=tid, catalogue_row=row["catalogue_row"], seed=1, predicted="a", probabilities=[0.4, 0.6],
                 explained_labels=["a"], status="ok", flags=[], invocation_id=invocation)
    rows = [dict(label="a", label_index=0, modality="lyrics" if f == "storm" else "audio", feature=f,
                 weight=weight(tid, f), rank=r + 1) for r, f in enumerate(FEATURES)]
    table = pa.Table.from_pylist(rows, schema=LOCAL_SCHEMA)
    table = table.add_column(0, "track_id", pa.array([tid] * len(rows), pa.string()))
    return track, table.append_column("sung_at_s", pa.nulls(len(rows), pa.list_(pa.float64())))  # as stages.fit


def run_rows(run: str, ids: list[str]) -> tuple[pa.Table, pa.Table]:
    """``tracks`` and ``explanations`` rows of ``ids`` as a run committed them (``run_id``
    added), in this release's schemas: what a test plants under a standing output."""
    from pipeline.writer_base import with_run_id
    from schemas.tables import EXPLANATIONS, TRACKS

    tracks, expl = [], []
    for i, tid in enumerate(ids):
        t, e = result({"track_id": tid, "catalogue_row": i}, "inv")
        tracks.append(pa.Table.from_pylist([t], schema=TRACKS))
        expl.append(e.cast(EXPLANATIONS))
    return with_run_id(pa.concat_tables(tracks), run), with_run_id(pa.concat_tables(expl), run)


def main(catalogue: str, out: str, run_id: str, fmt: str = "parquet") -> int:
    invocation = uuid.uuid4().hex[:12]
    reader = CatalogueReader(catalogue, batch_rows=3)
    iceberg = None
    if fmt == "iceberg":  # the catalog named by HARNESS_ICEBERG_CATALOG in pyiceberg's configuration
        from pipeline.iceberg import IcebergTables

        namespace = out.rstrip("/").rsplit("/", 1)[-1].replace("-", "_")  # one per output, as a user would
        iceberg = IcebergTables(out, os.environ.get("HARNESS_ICEBERG_CATALOG", "default"), namespace)
    writer = open_writer(fmt, out, run_id, invocation, commit_every=2, iceberg=iceberg)
    writer.recover()
    plan = make_worklist(reader, writer)
    try:
        for item in rows_to_do(reader, plan):
            if isinstance(item, ErrorRecord):
                writer.add_error(item.row(invocation))
            else:
                writer.add_track(*result(item, invocation))
            writer.maybe_commit()
        writer.commit()
    except Exception as e:  # as run_explain: commit what is complete, then stop
        try:
            writer.commit()
        except Exception:
            pass
        print(f"stopped: {e}", file=sys.stderr)
        return 1
    res = outcome(plan, writer)
    print(json.dumps(res.__dict__))
    return 0 if res.unaccounted == 0 else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
