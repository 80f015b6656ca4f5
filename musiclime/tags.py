"""A track's tags (mutagen): title, artist, album, genre, mood, duration, MusicBrainz recording
id, unsynced and synced lyrics; read in the decode stage, from the tag block only.

Real tags are messy; the rules:
- several ``USLT`` frames: the first of English (``eng``), then unknown (``und``/``XXX``),
  then the others by language code; in each, an empty description first;
- ID3 numeric genres are named (``(17)`` is ``Rock``; mutagen names MP4 ``gnre`` too); a multi-valued
  genre or mood keeps the first value (the one players show);
- every value is untrusted: control characters removed (newlines kept in lyrics), cut at
  :data:`MAX_TAG_CHARS` (lyrics :data:`MAX_LYRICS_CHARS`), with the flag ``tag_truncated``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from musiclime.synced import SyncedLyrics, from_sylt

MAX_TAG_CHARS = 512
MAX_LYRICS_CHARS = 65536
FIELDS = ("title", "artist", "album", "genre", "mood")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass
class Tags:
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    genre: str | None = None
    mood: str | None = None
    musicbrainz_recording_id: str | None = None
    duration_s: float | None = None
    lyrics: str | None = None  # unsynced
    synced: SyncedLyrics | None = None  # SYLT
    flags: list[str] = field(default_factory=list)

    def fields(self) -> dict[str, str | None]:
        return {f: getattr(self, f) for f in FIELDS}


def clean(value: Any, limit: int = MAX_TAG_CHARS, lines: bool = False) -> tuple[str | None, bool]:
    """``(text, cut)``: a tag value made safe to store and show (None when empty)."""
    if value is None:
        return None, False
    text = str(value)
    text = (_CONTROL.sub("", text) if lines else _CONTROL_LINE.sub(" ", text)).strip()
    if not text:
        return None, False
    return (text[:limit], True) if len(text) > limit else (text, False)


def read_tags(source: Any) -> Tags:
    """The tags of ``source`` (a path or seekable binary file). A file mutagen cannot parse
    has no tags (the decoder says whether it is audio)."""
    import mutagen

    try:
        f = mutagen.File(source)
    except Exception:  # mutagen.MutagenError and anything a damaged file raises
        f = _id3_alone(source)  # the audio behind an ID3 block may be what is damaged
        if f is None:
            return Tags(flags=["tags_unreadable"])
    if f is None:
        return Tags()
    raw: dict[str, Any] = {}
    tags = f.tags
    try:
        if tags is not None:
            kind = type(tags).__name__
            if kind == "ID3" or hasattr(tags, "getall"):
                raw = _id3(tags, getattr(f.info, "sample_rate", 44100))
            elif kind == "MP4Tags":
                raw = _mp4(tags)
            else:  # Vorbis comments (FLAC, Ogg Vorbis, Opus), APEv2, ASF: dict-like
                raw = _comments(tags)
    except Exception:
        return Tags(duration_s=_length(f), flags=["tags_unreadable"])
    out = Tags(duration_s=_length(f))
    for name in (*FIELDS, "musicbrainz_recording_id"):
        value, cut = clean(raw.get(name))
        setattr(out, name, value)
        if cut:
            out.flags.append("tag_truncated")
    out.lyrics, cut = clean(raw.get("lyrics"), MAX_LYRICS_CHARS, lines=True)
    if cut:
        out.flags.append("tag_truncated")
    out.synced = raw.get("synced")
    out.flags = sorted(set(out.flags))
    return out


@dataclass
class _TagsOnly:
    """A tag block without the file's stream info (what ``mutagen.File`` returns, minus ``info``)."""

    tags: Any
    info: Any = None


def _id3_alone(source: Any) -> Any:
    """The ID3 block of a file whose audio mutagen could not parse, as a tags-only object."""
    from mutagen.id3 import ID3

    try:
        if not isinstance(source, str):
            source.seek(0)
        return _TagsOnly(ID3(source))
    except Exception:
        return None


def _length(f) -> float | None:
    n = getattr(getattr(f, "info", None), "length", None)
    return float(n) if n else None


def _first(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return v[0] if v else None
    return v


def _id3(tags, sample_rate: int) -> dict[str, Any]:
    def text(frame_id: str):
        fr = tags.get(frame_id)
        return _first(list(fr.text)) if fr is not None and getattr(fr, "text", None) else None

    out: dict[str, Any] = {"title": text("TIT2"), "artist": text("TPE1"), "album": text("TALB"), "mood": text("TMOO")}
    tcon = tags.get("TCON")
    out["genre"] = _first(tcon.genres) if tcon is not None else None
    ufid = tags.get("UFID:http://musicbrainz.org")
    out["musicbrainz_recording_id"] = ufid.data.decode("ascii", "replace") if ufid is not None else None
    uslt = sorted(tags.getall("USLT"), key=lambda fr: (_lang_rank(fr.lang), fr.lang, fr.desc != "", fr.desc))
    out["lyrics"] = uslt[0].text if uslt else None
    sylt = sorted(tags.getall("SYLT"), key=lambda fr: (_lang_rank(fr.lang), fr.lang, fr.desc))
    if sylt:
        fr = sylt[0]
        out["synced"] = from_sylt([(t, int(ms)) for t, ms in fr.text], int(fr.format), 1152 / max(sample_rate, 1))
    return out


def _lang_rank(lang: str) -> int:
    return 0 if lang == "eng" else 1 if lang in ("und", "XXX", "xxx") else 2


_MP4 = {
    "title": "\xa9nam",
    "artist": "\xa9ART",
    "album": "\xa9alb",
    "genre": "\xa9gen",
    "lyrics": "\xa9lyr",
    "mood": "----:com.apple.iTunes:MOOD",
    "musicbrainz_recording_id": "----:com.apple.iTunes:MusicBrainz Track Id",
}


def _mp4(tags) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, key in _MP4.items():
        v = _first(tags.get(key))
        out[name] = bytes(v).decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else v
    return out


_COMMENTS = {
    "title": ("title",),
    "artist": ("artist",),
    "album": ("album",),
    "genre": ("genre",),
    "mood": ("mood",),
    "musicbrainz_recording_id": ("musicbrainz_trackid", "musicbrainz_recordingid"),
    "lyrics": ("lyrics", "unsyncedlyrics", "unsynced lyrics"),
}


def _comments(tags) -> dict[str, Any]:
    keys = {str(k).lower(): k for k in tags.keys()}
    out: dict[str, Any] = {}
    for name, wanted in _COMMENTS.items():
        for w in wanted:
            if w in keys:
                v = _first(tags[keys[w]])
                out[name] = str(v) if v is not None else None
                break
    return out
