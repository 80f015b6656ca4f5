"""The run's record: ``runs/<run>.json`` (the truth about one run) and ``run.json`` (a copy
of the newest run's record, for people and tools that look at an output folder).

Written in that order, each write atomic (a rename, or one PUT on object stores): a crash
between the two leaves ``run.json`` one write behind (or absent on a first run), itself a
whole record. Every reader in this project takes runs from ``runs/*.json``
(:func:`pipeline.output.runs`, :func:`pipeline.output.night_doc`) and reads ``run.json`` only
for the output's format, which all its runs share; the next write of the run repairs the copy.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from pipeline import failpoints
from pipeline.config import ExplainConfig


def catalogue_hash(path: str | Path) -> str:
    """sha256 of a catalogue file's bytes, or of a folder's file names and sizes."""
    from musiclime import storage

    h = hashlib.sha256()
    if storage.is_dir(path):
        start = len(storage.filesystem(path)[1].rstrip("/")) + 1
        for f, size in storage.walk(str(path)):
            h.update(storage.filesystem(f)[1][start:].encode())
            h.update(str(size).encode())
    else:
        with storage.open_input(path) as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("musiclime", "torch", "torchaudio", "transformers", "ray", "pyarrow", "numpy", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


class RunRecord:
    """``runs/<run>.json`` and ``run.json``: the run's config, resolved settings, config
    hash, output format, classes and invocations, each write atomic (a rename, or one PUT
    on object stores)."""

    def __init__(self, out: str, run_id: str, cfg: ExplainConfig, invocation_id: str, fmt: str, iceberg: Any = None):
        from pipeline.output import location, read_json

        self.out, self.run_id, self.cfg, self.invocation_id, self.format = out, run_id, cfg, invocation_id, fmt
        self.iceberg = iceberg  # pipeline.iceberg.IcebergTables of an Iceberg output
        self.path = location(out, "runs", f"{run_id}.json")
        self.latest = location(out, "run.json")
        self.previous = read_json(self.path) or {}
        self.model: dict = {k: self.previous.get(k) for k in ("classes", "model_id", "sample_rate")}
        self.started = self.previous.get("started") or time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._catalogue_hash: str | None = None
        self.skipped_files: dict[str, int] | None = self.previous.get("skipped_files")

    def catalogue_hash(self) -> str:
        if self._catalogue_hash is None:  # read once: a catalogue may be large
            self._catalogue_hash = catalogue_hash(self.cfg.catalogue)
        return self._catalogue_hash

    def config_hash(self) -> str | None:
        return self.cfg.config_hash(self.model["model_id"]) if self.model.get("model_id") else None

    def write(self, status: str, rows: int | None = None) -> None:
        from musiclime import storage
        from musiclime.audio_io import decoder_version

        old = self.previous
        decoder = decoder_version()
        settings = self.cfg.settings(self.model.get("model_id"))
        doc = {
            "run_id": self.run_id,
            "status": status,
            "format": self.format,
            **({"iceberg": self.iceberg.record()} if self.iceberg is not None else {}),
            "incremental": self.cfg.incremental,
            "config": self.cfg.to_json(),
            "seed": self.cfg.seed,
            "settings": settings,
            "config_hash": self.config_hash(),
            **self.model,
            "catalogue_hash": self.catalogue_hash(),
            "versions": versions(),
            # lossy formats' samples follow the decoder: a resume across an upgrade lists both
            # (each track's own is in tracks.decoder), and incremental nights re-explain lossy files
            "decoder": decoder,
            "decoders": list(dict.fromkeys(old.get("decoders", []) + [decoder])),
            "skipped_files": self.skipped_files,
            "invocation_id": self.invocation_id,
            "rows": rows,
            "invocations": list(dict.fromkeys(old.get("invocations", []) + [self.invocation_id])),
            "started": self.started,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        blob = json.dumps(doc, indent=2, default=str).encode()
        storage.write_atomic(self.path, blob)
        failpoints.hit("run-record:between")
        storage.write_atomic(self.latest, blob)
        self.previous = doc
