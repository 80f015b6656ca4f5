"""Reading a catalogue: Parquet, CSV, JSONL, or a folder of audio files with sidecar .txt
lyrics. Rows keep their position (``catalogue_row``) so every row can be accounted for.
Relative paths are resolved against the catalogue's folder."""
from __future__ import annotations

from pathlib import Path

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
PATH_COLUMNS = ("audio_path", "lyrics_path", "vocals_path", "drums_path", "bass_path", "other_path")


class CatalogueError(ValueError):
    """The catalogue as a whole cannot be read (a usage error, exit code 2)."""


def read_catalogue(path: str | Path) -> list[dict]:
    """Rows as dicts with ``catalogue_row`` (0-based position) and absolute paths."""
    p = Path(path)
    if not p.exists():
        raise CatalogueError(f"no catalogue at {p}")
    if p.is_dir():
        rows, root = _folder_rows(p), p
    else:
        root = p.parent
        suffix = p.suffix.lower()
        try:
            if suffix == ".parquet":
                import pyarrow.parquet as pq
                rows = pq.read_table(p).to_pylist()
            elif suffix == ".csv":
                import pyarrow.csv as pcsv
                rows = pcsv.read_csv(p).to_pylist()
            elif suffix in (".jsonl", ".ndjson", ".json"):
                import pyarrow.json as pjson
                rows = pjson.read_json(p).to_pylist()
            else:
                raise CatalogueError(f"unknown catalogue format {suffix!r}: use .parquet, .csv, .jsonl or a folder")
        except CatalogueError:
            raise
        except Exception as e:
            raise CatalogueError(f"cannot read catalogue {p}: {e}") from None
    if rows and "track_id" not in rows[0]:
        raise CatalogueError(f"catalogue {p} has no track_id column")
    out = []
    for i, r in enumerate(rows):
        r = dict(r)
        r["track_id"] = None if r.get("track_id") is None else str(r["track_id"])
        for c in PATH_COLUMNS:
            if r.get(c):
                q = Path(str(r[c]))
                r[c] = str(q if q.is_absolute() else root / q)
        r["catalogue_row"] = i
        out.append(r)
    return out


def _folder_rows(folder: Path) -> list[dict]:
    rows = []
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES:
            txt = f.with_suffix(".txt")
            rows.append({"track_id": str(f.relative_to(folder).with_suffix("")), "audio_path": str(f),
                         "lyrics_path": str(txt) if txt.is_file() else None})
    return rows
