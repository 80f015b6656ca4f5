"""Reading a catalogue in batches: Parquet, CSV, JSONL, or a folder of audio files with
sidecar .txt lyrics. Never the whole catalogue at once, so the driver's memory does not
grow with its rows.

Rows keep their position (``catalogue_row``) for the tables, but a run matches rows by
``track_id`` (see :mod:`pipeline.plan`). Relative paths are resolved against the
catalogue's folder.

CSV and JSONL are read as text: ``007`` stays ``"007"``, ``NA`` and ``true`` stay strings,
an empty CSV cell is ``""``. A row with a cell that is not UTF-8 (or a JSONL line that is
not JSON) becomes an error row (``catalogue_decode_error``) and never changes another row.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
PATH_COLUMNS = ("audio_path", "lyrics_path", "vocals_path", "drums_path", "bass_path", "other_path")
DECODE_ERROR = "_decode_error"   # key of a row that could not be read: the reason


class CatalogueError(ValueError):
    """The catalogue as a whole cannot be read (a usage error, exit code 2)."""


class CatalogueReader:
    """Batches of row dicts, each with ``catalogue_row`` (0-based position) and
    ``track_id`` (a str, or None when missing); a row that could not be decoded carries
    ``DECODE_ERROR`` with the reason. Iterating twice reads the file twice.

    Args:
        path: a ``.parquet``, ``.csv``, ``.jsonl``/``.ndjson``/``.json`` file or a folder.
        batch_rows: rows per batch.
        limit: stop after this many rows.
    """

    def __init__(self, path: str | Path, batch_rows: int = 4096, limit: int | None = None):
        self.path = Path(path)
        self.batch_rows = max(1, int(batch_rows))
        self.limit = limit
        if not self.path.exists():
            raise CatalogueError(f"no catalogue at {self.path}")
        self.root = self.path if self.path.is_dir() else self.path.parent
        self.kind = "folder" if self.path.is_dir() else self.path.suffix.lower().lstrip(".")
        if self.kind not in ("folder", "parquet", "csv", "jsonl", "ndjson", "json"):
            raise CatalogueError(f"unknown catalogue format {self.path.suffix!r}: use .parquet, .csv, .jsonl or a folder")
        self.columns = self._columns()
        if self.kind != "folder" and "track_id" not in self.columns:
            raise CatalogueError(f"catalogue {self.path} has no track_id column")

    def _columns(self) -> list[str]:
        try:
            if self.kind == "parquet":
                import pyarrow.parquet as pq
                return list(pq.read_schema(self.path).names)
            if self.kind == "csv":
                return _csv_names(self.path)
            if self.kind == "folder":
                return ["track_id", "audio_path", "lyrics_path"]
            return self._jsonl_columns()
        except CatalogueError:
            raise
        except Exception as e:
            raise CatalogueError(f"cannot read catalogue {self.path}: {e}") from None

    def _jsonl_columns(self) -> list[str]:
        # the first line that parses names the columns (the check for track_id); rows may add more
        with open(self.path, "rb") as f:
            for line in f:
                try:
                    obj = json.loads(line.decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    continue
                if isinstance(obj, dict):
                    return list(obj)
        return ["track_id"]

    def __iter__(self) -> Iterator[list[dict]]:
        return self.batches()

    def batches(self) -> Iterator[list[dict]]:
        source = {"parquet": self._parquet, "csv": self._csv, "folder": self._folder}.get(self.kind, self._jsonl)
        n = 0
        try:
            for raw in source():
                if self.limit is not None:
                    raw = raw[:max(0, self.limit - n)]
                out = []
                for r in raw:
                    r["catalogue_row"] = n
                    n += 1
                    out.append(self._normalise(r))
                if out:
                    yield out
                if self.limit is not None and n >= self.limit:
                    return
        except CatalogueError:
            raise
        except Exception as e:  # a file that stops parsing half-way: the whole catalogue is unusable
            raise CatalogueError(f"cannot read catalogue {self.path} after row {n}: {e}") from None

    def rows(self) -> Iterator[dict]:
        for batch in self.batches():
            yield from batch

    def _normalise(self, r: dict) -> dict:
        tid = r.get("track_id")
        r["track_id"] = None if tid is None or str(tid) == "" else str(tid)
        if DECODE_ERROR in r:
            return r
        for c in PATH_COLUMNS:
            if r.get(c):
                q = Path(str(r[c]))
                r[c] = str(q if q.is_absolute() else self.root / q)
        return r

    # ------------------------------------------------------------------ sources
    def _parquet(self) -> Iterator[list[dict]]:
        import pyarrow.parquet as pq
        # pre_buffer would keep the file's column chunks alive (~the file's size) while iterating
        with pq.ParquetFile(self.path, pre_buffer=False) as f:
            for b in f.iter_batches(batch_size=self.batch_rows):
                yield b.to_pylist()

    def _csv(self) -> Iterator[list[dict]]:
        import pyarrow as pa
        import pyarrow.csv as pcsv
        names = _csv_names(self.path)
        # every column as raw bytes: no type inference, no null markers; decoded per cell below
        reader = pcsv.open_csv(
            self.path, read_options=pcsv.ReadOptions(block_size=1 << 22),
            convert_options=pcsv.ConvertOptions(column_types={n: pa.binary() for n in names}, null_values=[],
                                                strings_can_be_null=False, quoted_strings_can_be_null=False,
                                                check_utf8=False))
        for b in reader:
            rows = b.to_pylist()
            for i in range(0, len(rows), self.batch_rows):
                yield [_text_row(r) for r in rows[i:i + self.batch_rows]]

    def _jsonl(self) -> Iterator[list[dict]]:
        batch: list[dict] = []
        with open(self.path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                batch.append(_json_row(line, lineno))
                if len(batch) >= self.batch_rows:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def _folder(self) -> Iterator[list[dict]]:
        batch: list[dict] = []
        for f in sorted(self.path.rglob("*")):
            if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES:
                txt = f.with_suffix(".txt")
                batch.append({"track_id": str(f.relative_to(self.path).with_suffix("")), "audio_path": str(f),
                              "lyrics_path": str(txt) if txt.is_file() else None})
                if len(batch) >= self.batch_rows:
                    yield batch
                    batch = []
        if batch:
            yield batch


def _csv_names(path: Path) -> list[str]:
    import pyarrow.csv as pcsv
    r = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 16),
                      convert_options=pcsv.ConvertOptions(check_utf8=False))
    names = list(r.schema.names)
    r.close()
    return names


def _text_row(raw: dict) -> dict:
    row, bad = {}, []
    for k, v in raw.items():
        try:
            row[k] = v.decode("utf-8")
        except UnicodeDecodeError:
            row[k] = None
            bad.append(k)
    if bad:
        row[DECODE_ERROR] = f"column(s) {', '.join(bad)} are not UTF-8"
    return row


def _json_row(line: bytes, lineno: int) -> dict:
    try:
        # numbers keep their text (007-like ids, long ints, 1.10); true/false become "true"/"false"
        obj = json.loads(line.decode("utf-8"), parse_int=str, parse_float=str, parse_constant=str)
    except UnicodeDecodeError as e:
        return {"track_id": None, DECODE_ERROR: f"line {lineno} is not UTF-8 ({e.reason} at byte {e.start})"}
    except ValueError as e:
        return {"track_id": None, DECODE_ERROR: f"line {lineno} is not JSON ({e})"}
    if not isinstance(obj, dict):
        return {"track_id": None, DECODE_ERROR: f"line {lineno} is a JSON {type(obj).__name__}, not an object"}
    return {str(k): _json_text(v) for k, v in obj.items()}


def _json_text(v):
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v, ensure_ascii=False)


def read_catalogue(path: str | Path, limit: int | None = None) -> list[dict]:
    """All rows at once: for small catalogues (reports, tests). Jobs stream with
    :class:`CatalogueReader`."""
    return list(CatalogueReader(path, limit=limit).rows())
