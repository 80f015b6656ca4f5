"""Reading a catalogue in batches: a Parquet, CSV or JSONL file, a Parquet dataset folder,
a Delta table, or a folder of audio files with sidecar .txt lyrics; on a local path or any
URI of :mod:`musiclime.storage` (``s3://`` tested). Never the whole catalogue at once, so
the driver's memory does not grow with its rows.

Rows keep their position (``catalogue_row``) for the tables, but a run matches rows by
``track_id`` (see :mod:`pipeline.worklist`). Relative paths are resolved against the
catalogue's folder (a relative path in an ``s3://`` catalogue is in the same bucket).

CSV and JSONL are read as text: ``007`` stays ``"007"``, ``NA`` and ``true`` stay strings,
an empty CSV cell is ``""``. A row with a cell that is not UTF-8 (or a JSONL line that is
not JSON) becomes an error row (``catalogue_decode_error``) and never changes another row.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from musiclime import storage

if TYPE_CHECKING:
    from musiclime.listing import Listings
    from pipeline.folder import Skipped

PATH_COLUMNS = ("audio_path", "lyrics_path", "lrc_path", "vocals_path", "drums_path", "bass_path", "other_path")
LYRICS_PATH_COLUMNS = ("lyrics_path", "lrc_path")   # the files a text classifier reads (and the
# audio file's tags when the row has no other lyrics: see content_keys)
FOLDER_COLUMNS = ("track_id", "audio_path", "lyrics_path", "lrc_path")
TAG_COLUMNS = ("title", "artist", "album", "genre", "mood")  # read from the files' tags at decode
DECODE_ERROR = "_decode_error"   # key of a row that could not be read: the reason


CHECKSUM = "checksum"            # a catalogue column that, when present, decides "unchanged" alone


def content_keys(rows: list[dict], label_column: str | None = None, audio_used: bool = True,
                 listings: Listings | None = None) -> list[str]:
    """Per row, a 32-hex-digit key of what decides "unchanged" without reading the audio:
    the ``checksum`` column when the catalogue has one, else the size and modification time
    (Last-Modified on object stores) of each file the model reads (its audio, stem and
    lyrics files; the lyrics file alone when ``audio_used`` is False, for a text
    classifier, or its audio file when the row has no other lyrics: their tags); plus the
    inline lyrics and the label column's value (what ``--labels true`` explains). A lossy
    audio file's key also holds the decoder's version (:func:`musiclime.audio_io.decoder_version`):
    after a decoder upgrade an incremental night re-explains lossy files once, lossless ones
    (decoded bit-identically) never. A missing file counts as such, so a file that appears
    later changes the key."""
    import hashlib

    from musiclime.audio_io import decoder_version
    from pipeline.folder import LOSSLESS_SUFFIXES

    def columns_of(r: dict) -> tuple[str, ...]:
        if audio_used:
            return PATH_COLUMNS
        # a text classifier reads the audio file only for the lyrics in its tags
        return LYRICS_PATH_COLUMNS if any(r.get(c) for c in ("lyrics", *LYRICS_PATH_COLUMNS)) else ("audio_path",)

    wanted = [r[c] for r in rows if DECODE_ERROR not in r and not r.get(CHECKSUM)
              for c in columns_of(r) if r.get(c)]
    found = storage.stats(wanted, listings) if wanted else {}
    decoder = b""
    keys = []
    for r in rows:
        h = hashlib.blake2b(digest_size=16)
        h.update(str(r.get("track_id")).encode("utf-8", "surrogatepass"))
        if DECODE_ERROR in r:
            h.update(b"\0undecodable")
        elif r.get(CHECKSUM):
            h.update(b"\0checksum=" + str(r[CHECKSUM]).encode("utf-8", "surrogatepass"))
        else:
            for c in columns_of(r):
                if r.get(c):
                    st = found.get(r[c])
                    h.update(f"\0{c}=".encode() + (f"{st[0]}:{st[1]}".encode() if st else b"missing"))
                    if c not in LYRICS_PATH_COLUMNS and not str(r[c]).split("?")[0].lower().endswith(LOSSLESS_SUFFIXES):
                        # a lossy file's samples follow the decoder: a new one re-explains it once
                        decoder = decoder or decoder_version().encode()
                        h.update(b"\0decoder=" + decoder)
        for c in ("lyrics", label_column):
            if c and r.get(c) is not None:
                h.update(f"\0{c}=".encode() + str(r[c]).encode("utf-8", "surrogatepass"))
        keys.append(h.hexdigest())
    return keys


@dataclass(frozen=True)
class ContentKeys:
    """What decides "unchanged" for one run (see :func:`content_keys`): the label column
    it explains and whether its model hears the audio."""
    label_column: str | None = None
    audio_used: bool = True
    # the run's object-store listings (musiclime.listing): sizes and times by LIST, not HEAD
    listings: Listings | None = field(default=None, compare=False)

    def __call__(self, rows: list[dict]) -> list[str]:
        return content_keys(rows, self.label_column, self.audio_used, self.listings)


class CatalogueError(ValueError):
    """The catalogue as a whole cannot be read (a usage error, exit code 2)."""


class CatalogueReader:
    """Batches of row dicts, each with ``catalogue_row`` (0-based position) and
    ``track_id`` (a str, or None when missing); a row that could not be decoded carries
    ``DECODE_ERROR`` with the reason. Iterating twice reads the file twice.

    Args:
        path: a ``.parquet``, ``.csv``, ``.jsonl``/``.ndjson``/``.json`` file, a folder
            (a Delta table when it has ``_delta_log/``, a Parquet dataset when it holds
            ``.parquet`` files, else a folder of audio files), as a path or a URI.
        batch_rows: rows per batch.
        limit: stop after this many rows.
    """

    def __init__(self, path: str | Path, batch_rows: int = 4096, limit: int | None = None):
        self.path = str(path)
        self.batch_rows = max(1, int(batch_rows))
        self.limit = limit
        self.skipped: Skipped | None = None  # a folder's files left out, counted as its rows are read
        try:
            found = storage.info(self.path)
        except Exception as e:  # a bad URI, an unknown bucket, no credentials
            raise CatalogueError(f"cannot reach catalogue {self.path}: {e}") from None
        if found.type.name == "NotFound":
            raise CatalogueError(f"no catalogue at {self.path}")
        folder = found.type.name == "Directory"
        self.root = self.path if folder else storage.parent(self.path)
        self.kind = self._folder_kind() if folder else Path(self.path.split("?")[0]).suffix.lower().lstrip(".")
        if self.kind not in ("folder", "dataset", "delta", "parquet", "csv", "jsonl", "ndjson", "json"):
            raise CatalogueError(f"unknown catalogue format {Path(self.path).suffix!r}: use .parquet, .csv, .jsonl, "
                                 f"a Parquet dataset or Delta table folder, or a folder of audio files")
        self.columns = self._columns()
        if self.kind != "folder" and "track_id" not in self.columns:
            raise CatalogueError(f"catalogue {self.path} has no track_id column")

    def _folder_kind(self) -> str:
        if storage.is_dir(storage.join(self.path, "_delta_log")):
            return "delta"
        from pipeline.folder import Skipped, scan
        top = [c.rstrip("/").rsplit("/", 1)[-1] for c in storage.children(self.path)]
        # a Parquet dataset: .parquet files at the top or in hive partitions (k=v), no audio anywhere
        # (the scan stops at the first audio file and never follows a link loop)
        tabular = any(n.lower().endswith(".parquet") or "=" in n for n in top)
        return "dataset" if tabular and next(scan(self.path, Skipped()), None) is None else "folder"

    def _dataset(self):
        """The pyarrow dataset of a Parquet dataset folder or a Delta table (its current version)."""
        import pyarrow.dataset as pds
        if self.kind == "delta":
            from deltalake import DeltaTable
            return storage.delta_dataset(DeltaTable(self.path), self.path)
        fs, path = storage.filesystem(self.path)
        return pds.dataset(path, filesystem=fs, format="parquet", partitioning="hive")

    def _columns(self) -> list[str]:
        try:
            if self.kind == "parquet":
                import pyarrow.parquet as pq
                with storage.open_input(self.path) as f:
                    return list(pq.read_schema(f).names)
            if self.kind in ("dataset", "delta"):
                return list(self._dataset().schema.names)
            if self.kind == "csv":
                return _csv_names(self.path)
            if self.kind == "folder":
                return [*FOLDER_COLUMNS, *TAG_COLUMNS]
            return self._jsonl_columns()
        except CatalogueError:
            raise
        except Exception as e:
            raise CatalogueError(f"cannot read catalogue {self.path}: {e}") from None

    def _jsonl_columns(self) -> list[str]:
        # the first line that parses names the columns (the check for track_id); rows may add more
        with storage.open_input(self.path) as f:
            for line in _lines(f):
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
        source = {"parquet": self._parquet, "csv": self._csv, "folder": self._folder, "dataset": self._tables,
                  "delta": self._tables}.get(self.kind, self._jsonl)
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

    def row_at(self, n: int) -> dict | None:
        """Catalogue row ``n`` (0-based) as :meth:`rows` yields it, or None past the end: a
        Parquet file reads only the row group holding it, other kinds stream up to it."""
        if n < 0 or (self.limit is not None and n >= self.limit):
            return None
        if self.kind == "parquet":
            import pyarrow.parquet as pq
            with storage.open_input(self.path) as raw, pq.ParquetFile(raw, pre_buffer=False) as f:
                first = 0
                for g in range(f.num_row_groups):
                    size = f.metadata.row_group(g).num_rows
                    if n < first + size:
                        r = f.read_row_group(g).slice(n - first, 1).to_pylist()[0]
                        return self._normalise({**r, "catalogue_row": n})
                    first += size
            return None
        for r in self.rows():
            if r["catalogue_row"] == n:
                return r
        return None

    def _normalise(self, r: dict) -> dict:
        tid = r.get("track_id")
        r["track_id"] = None if tid is None or str(tid) == "" else str(tid)
        if DECODE_ERROR in r:
            return r
        for c in PATH_COLUMNS:
            if r.get(c):
                r[c] = storage.join(self.root, str(r[c]))
        return r

    # ------------------------------------------------------------------ sources
    def _parquet(self) -> Iterator[list[dict]]:
        import pyarrow.parquet as pq
        # pre_buffer would keep the file's column chunks alive (~the file's size) while iterating
        with storage.open_input(self.path) as raw, pq.ParquetFile(raw, pre_buffer=False) as f:
            for b in f.iter_batches(batch_size=self.batch_rows):
                yield b.to_pylist()

    def _tables(self) -> Iterator[list[dict]]:
        # fragments in path order, rows in file order: the same catalogue_row every pass
        for b in self._dataset().to_batches(batch_size=self.batch_rows, use_threads=False):
            if b.num_rows:
                yield b.to_pylist()

    def _csv(self) -> Iterator[list[dict]]:
        import pyarrow as pa
        import pyarrow.csv as pcsv
        names = _csv_names(self.path)
        # every column as raw bytes: no type inference, no null markers; decoded per cell below
        reader = pcsv.open_csv(
            storage.open_input(self.path), read_options=pcsv.ReadOptions(block_size=1 << 22),
            convert_options=pcsv.ConvertOptions(column_types={n: pa.binary() for n in names}, null_values=[],
                                                strings_can_be_null=False, quoted_strings_can_be_null=False,
                                                check_utf8=False))
        for b in reader:
            rows = b.to_pylist()
            for i in range(0, len(rows), self.batch_rows):
                yield [_text_row(r) for r in rows[i:i + self.batch_rows]]

    def _jsonl(self) -> Iterator[list[dict]]:
        batch: list[dict] = []
        with storage.open_input(self.path) as f:
            for lineno, line in enumerate(_lines(f), 1):
                if not line.strip():
                    continue
                batch.append(_json_row(line, lineno))
                if len(batch) >= self.batch_rows:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def _folder(self) -> Iterator[list[dict]]:
        from pipeline.folder import Skipped, scan
        skipped = self.skipped = Skipped()
        batch: list[dict] = []
        for row in scan(self.path, skipped):
            batch.append(row)
            if len(batch) >= self.batch_rows:
                yield batch
                batch = []
        if batch:
            yield batch


def _lines(f, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The lines of a binary file (a ``pyarrow.NativeFile`` has no line iterator), ``\n`` kept."""
    rest = b""
    while True:
        block = f.read(chunk)
        if not block:
            break
        parts = (rest + block).split(b"\n")
        rest = parts.pop()
        for p in parts:
            yield p + b"\n"
    if rest:
        yield rest


def _csv_names(path: str) -> list[str]:
    import pyarrow.csv as pcsv
    r = pcsv.open_csv(storage.open_input(path), read_options=pcsv.ReadOptions(block_size=1 << 16),
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
