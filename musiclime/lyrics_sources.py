"""Where a track's lyrics come from, in order of precedence (docs/library.md):

1. the catalogue's ``lyrics`` column (``catalogue``);
2. a ``.lrc`` file (``lrc_path``; a folder finds ``Song.lrc`` beside ``Song.mp3``): time-synced
   when it has timestamps (``lrc``);
3. a ``.txt`` file (``lyrics_path``): UTF-8 (``text_file``);
4. the audio file's tags: ID3 ``SYLT`` (``tag_synced``), else ``USLT``/MP4 ``©lyr``/Vorbis
   ``LYRICS``/``UNSYNCEDLYRICS`` (``tag``).

The first source present wins, even when empty. The source is written per track
(``tracks.lyrics_source``; null when none).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from musiclime.errors import InputError
from musiclime.synced import SyncedLyrics, decode_text, parse_lrc


@dataclass
class Lyrics:
    text: str
    source: str | None  # catalogue | lrc | text_file | tag_synced | tag | None
    synced: SyncedLyrics | None = None  # words with times (lrc with timestamps, tag_synced)
    flags: list[str] = field(default_factory=list)


def find_lyrics(row: dict[str, Any], tags: Callable[[], Any]) -> Lyrics:
    """The lyrics of a catalogue row; ``tags()`` reads the audio file's :class:`musiclime.tags.Tags`
    (called only when no other source is present).

    Raises:
        InputError: ``missing_file`` (a named lyrics file is absent), ``lyrics_decode_error``
            (a ``.txt`` or the ``lyrics`` column is not UTF-8).
    """
    text = row.get("lyrics")
    if isinstance(text, (bytes, bytearray)):
        try:
            return Lyrics(bytes(text).decode("utf-8"), "catalogue")
        except UnicodeDecodeError as e:
            raise InputError("lyrics_decode_error", f"lyrics are not UTF-8: {e}") from None
    if isinstance(text, str):
        return Lyrics(text, "catalogue")
    if row.get("lrc_path"):
        return read_lrc(row["lrc_path"])
    if row.get("lyrics_path"):
        from musiclime.audio_io import read_lyrics_file

        return Lyrics(read_lyrics_file(row["lyrics_path"]), "text_file")
    found = tags()
    if found is not None and found.synced is not None:
        return Lyrics(found.synced.text(), "tag_synced", found.synced)
    if found is not None and found.lyrics:
        return Lyrics(found.lyrics, "tag")
    return Lyrics("", None)


def read_lrc(path: str) -> Lyrics:
    """An LRC file: timed words when it has timestamps, else its text; any encoding
    (:func:`musiclime.synced.decode_text`; ``lyrics_recoded`` when not UTF-8)."""
    from musiclime import storage
    from musiclime.audio_io import file_exists

    if not file_exists(path):
        raise InputError("missing_file", f"no lyrics file at {path}")
    raw = storage.read_bytes(path)
    text, recoded = decode_text(raw)
    flags = ["lyrics_recoded"] if recoded else []
    synced = parse_lrc(text)
    if synced is None:
        return Lyrics(text, "lrc", None, flags)
    return Lyrics(synced.text(), "lrc", synced, flags)
