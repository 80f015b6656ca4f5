"""A folder of audio files as a catalogue: which files are tracks, their ids, their sidecars.

Rules (docs/library.md says the same to users):

- **Audio** is every extension in :data:`AUDIO_SUFFIXES` (what FFmpeg's demuxers in the
  ``av`` wheel read), in any case. Other files are skipped and counted by extension
  (``.jpg: 230``); sidecars (``.txt``, ``.lrc``) that belong to a track are not.
- A ``.cue`` sheet is counted with the skipped files and its album file (one FLAC for the
  whole album) is explained as one track: a note in the summary says so.
- **Hidden** names (starting with ``.``: files and whole folders) and macOS AppleDouble
  files (``._*``) are skipped and counted (``hidden``, ``appledouble``).
- **Symlinks** are followed; each real file and each real folder is taken once (the first
  path met wins: see Order), so a link loop ends and a linked album is not listed twice.
- **Ids**: the path under the folder without its extension (``Artist/Album/01 Song``), as
  before this release: ids that were unique keep their bytes. Two audio files of one name
  in one folder (``Song.flac`` and ``Song.mp3``) both keep their extension in the id
  (``Song.flac``, ``Song.mp3``): both are explained, under distinct ids.
- **Names** are kept as stored (NFC or NFD bytes alike); a sidecar belongs to an audio file
  when their names match after NFC normalisation (a ``.lrc`` written on Linux for a track
  copied from macOS).
- **Order**: a folder's files, then its folders, each in name order (by the stored bytes),
  depth-first: the same rows in the same order every night; the first path met wins. Memory is one folder's names at a time, plus the real
  paths seen (for symlink deduplication).
"""

from __future__ import annotations

import itertools
import os
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from musiclime import storage

# Extensions of audio FFmpeg reads (the av wheel's demuxers); .mp4/.m4b/.webm/.mkv may hold
# video: a file with no audio stream is an error row (no_audio_stream), never skipped silently.
AUDIO_SUFFIXES = (
    ".wav",
    ".wave",
    ".flac",
    ".ogg",
    ".oga",
    ".opus",
    ".spx",
    ".mp3",
    ".mp2",
    ".m4a",
    ".m4b",
    ".mp4",
    ".aac",
    ".adts",
    ".alac",
    ".aiff",
    ".aif",
    ".aifc",
    ".caf",
    ".wma",
    ".asf",
    ".webm",
    ".mka",
    ".mkv",
    ".wv",
    ".ape",
    ".tta",
    ".ac3",
    ".eac3",
    ".dts",
    ".amr",
    ".au",
    ".snd",
    ".w64",
    ".mpc",
    ".tak",
    ".dsf",
    ".dff",
    ".ra",
)
SIDECARS = (".txt", ".lrc")
LOSSLESS_SUFFIXES = (".wav", ".wave", ".flac", ".aiff", ".aif", ".aifc", ".w64", ".wv", ".ape", ".tta", ".tak")


@dataclass
class Skipped:
    """What a folder scan left out, counted: by extension, hidden, AppleDouble, duplicates."""

    counts: Counter = field(default_factory=Counter)

    def add(self, what: str) -> None:
        self.counts[what] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def describe(self) -> str:
        """``skipped 240 files: 230 .jpg, 10 .pdf`` (empty when nothing was skipped)."""
        if not self.total:
            return ""
        note = " (an album file beside a .cue sheet is explained as one track)" if self.counts[".cue"] else ""
        return f"skipped {self.total} files: " + ", ".join(f"{n} {k}" for k, n in self.as_dict().items()) + note


def _suffix(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else "(no extension)"


def _nfc(s: str) -> str:
    return unicodedata.normalize("NFC", s)


def tracks_of(names: list[str], skipped: Skipped) -> list[tuple[str, str, dict[str, str]]]:
    """One folder's file names -> ``(name, id_stem, sidecars)`` per audio file, in name order;
    ``sidecars`` maps ``.txt``/``.lrc`` to the sidecar's name. Skipped names are counted."""
    audio, sidecars = [], {}
    for name in names:
        if name.startswith("._"):
            skipped.add("appledouble")
        elif name.startswith("."):
            skipped.add("hidden")
        elif _suffix(name) in AUDIO_SUFFIXES:
            audio.append(name)
        elif _suffix(name) in SIDECARS:
            sidecars[(_nfc(name[: name.rfind(".")]), _suffix(name))] = name
        else:
            skipped.add(_suffix(name))
    stems = Counter(n[: n.rfind(".")] for n in audio)
    used: set[tuple[str, str]] = set()
    out = []
    for n in audio:
        stem = n[: n.rfind(".")]
        mine = {ext: sidecars[(_nfc(stem), ext)] for ext in SIDECARS if (_nfc(stem), ext) in sidecars}
        used.update((_nfc(stem), ext) for ext in mine)
        out.append((n, n if stems[stem] > 1 else stem, mine))
    for key, name in sidecars.items():
        if key not in used:
            skipped.add(_suffix(name))
    return out


def scan(root: str, skipped: Skipped) -> Iterator[dict]:
    """Catalogue rows (``track_id``, ``audio_path``, ``lyrics_path``, ``lrc_path``) of the
    audio files under the folder ``root`` (a path or URI), by the rules above."""
    if storage.is_object_store(root):
        yield from _scan_store(root, skipped)
    else:
        yield from _scan_local(storage.filesystem(root)[1], root, skipped)


def _row(prefix: str, folder: str, name: str, stem: str, sidecars: dict[str, str], join) -> dict:
    return {
        "track_id": prefix + stem,
        "audio_path": join(folder, name),
        "lyrics_path": join(folder, sidecars[".txt"]) if ".txt" in sidecars else None,
        "lrc_path": join(folder, sidecars[".lrc"]) if ".lrc" in sidecars else None,
    }


def _scan_local(path: str, root: str, skipped: Skipped) -> Iterator[dict]:
    seen: set[tuple[int, int]] = set()

    def join(folder: str, name: str) -> str:
        full = os.path.join(folder, name)
        return full if not storage.is_uri(root) else "file://" + full

    def visit(folder: str, prefix: str) -> Iterator[dict]:
        try:
            st = os.stat(folder)
            entries = sorted(os.scandir(folder), key=lambda e: os.fsencode(e.name))
        except OSError:
            skipped.add("unreadable folder")
            return
        seen.add((st.st_dev, st.st_ino))
        files, dirs, real = [], [], {}
        for e in entries:
            try:
                st_e = e.stat()  # follows links: a broken link raises
            except OSError:
                skipped.add("broken link")
                continue
            if e.is_dir():
                if e.name.startswith("."):
                    skipped.add("hidden")
                elif (st_e.st_dev, st_e.st_ino) in seen:
                    skipped.add("link to a folder already listed")
                else:
                    dirs.append(e.name)
                continue
            files.append(e.name)
            real[e.name] = (st_e.st_dev, st_e.st_ino)
        # ids are decided on the folder's names (a link does not change them); then each
        # real file is taken once
        for name, stem, side in tracks_of(files, skipped):
            if real[name] in seen:
                skipped.add("link to a file already listed")
                continue
            seen.add(real[name])
            yield _row(prefix, folder, name, stem, side, join)
        for d in dirs:
            full = os.path.join(folder, d)
            st_d = os.stat(full)
            if (st_d.st_dev, st_d.st_ino) in seen:  # reached through another path meanwhile
                skipped.add("link to a folder already listed")
                continue
            yield from visit(full, prefix + d + "/")

    yield from visit(path, "")


def _scan_store(root: str, skipped: Skipped) -> Iterator[dict]:
    import pyarrow.fs as pafs

    fs, path = storage.filesystem(root)
    scheme = root.partition("://")[0]

    def join(folder: str, name: str) -> str:
        return f"{scheme}://{folder}/{name}"

    def visit(folder: str, prefix: str) -> Iterator[dict]:
        found = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        files = sorted((f.base_name for f in found if f.type == pafs.FileType.File), key=os.fsencode)
        dirs = sorted((f.base_name for f in found if f.type == pafs.FileType.Directory), key=os.fsencode)
        for name, stem, side in tracks_of(files, skipped):
            yield _row(prefix, folder, name, stem, side, join)
        for d in dirs:
            if d.startswith("."):
                skipped.add("hidden")
                continue
            yield from visit(f"{folder}/{d}", prefix + d + "/")

    yield from visit(path.rstrip("/"), "")


SCAN_TAGS = ("title", "artist", "album", "genre", "mood", "musicbrainz_recording_id", "duration_s")


def write_catalogue(root: str, out: str, batch_rows: int = 2048, progress=None) -> tuple[int, Skipped]:
    """``musiclime library scan``: the folder's catalogue with its tag columns, as Parquet at
    ``out`` (a path or URI), written in batches (memory: a batch, whatever the folder's
    size). Explaining it gives the rows explaining the folder gives."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from musiclime.tags import read_tags

    schema = pa.schema(
        [
            *(pa.field(c, pa.string()) for c in ("track_id", "audio_path", "lyrics_path", "lrc_path")),
            *(pa.field(c, pa.float64() if c == "duration_s" else pa.string()) for c in SCAN_TAGS),
            pa.field("tag_flags", pa.list_(pa.string())),
        ]
    )
    if not storage.is_dir(root):
        raise ValueError(f"{root} is not a folder")
    skipped, n = Skipped(), 0
    fs, path = storage.filesystem(out)
    with fs.open_output_stream(path) as sink, pq.ParquetWriter(sink, schema) as writer:
        rows = scan(root, skipped)
        while batch := list(itertools.islice(rows, batch_rows)):
            for row in batch:
                source = storage.readable(row["audio_path"])
                try:
                    tags = read_tags(source)
                finally:
                    if not isinstance(source, str):
                        source.close()
                row.update({c: getattr(tags, c) for c in SCAN_TAGS}, tag_flags=tags.flags)
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            n += len(batch)
            if progress:
                progress(n)
    return n, skipped
