"""Time-synced lyrics: LRC files (``[mm:ss.xx]`` lines, enhanced ``<mm:ss.xx>`` word times,
``[offset:]``, several timestamps on one line) and ID3 ``SYLT`` frames, as timed words.

A line's words without their own times are spread evenly from the line's time to the next
line's (at most :data:`MAX_LINE_S` seconds), so every word has the time it is sung.
``[offset:+N]`` (milliseconds) makes the lyrics appear N ms sooner, as players do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LINE_S = 10.0
_STAMP = re.compile(r"\[(\d{1,3}):(\d{1,2}(?:[.:]\d{1,3})?)\]")
_WORD_STAMP = re.compile(r"<(\d{1,3}):(\d{1,2}(?:[.:]\d{1,3})?)>")
_OFFSET = re.compile(r"^\[offset:\s*([+-]?\d+)\s*\]", re.I | re.M)
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class TimedWord:
    word: str
    time_s: float  # from the track's start


@dataclass(frozen=True)
class SyncedLyrics:
    """Words with the times they are sung, in time order."""

    words: tuple[TimedWord, ...]

    def text(self) -> str:
        """The whole lyrics as plain text (the words in sung order)."""
        return " ".join(w.word for w in self.words)

    def within(self, start_s: float, end_s: float) -> tuple[str, dict[str, list[float]]]:
        """The text sung in ``[start_s, end_s)`` and, per word (as lime splits it), the times
        (seconds from ``start_s``) it is sung there."""
        inside = [w for w in self.words if start_s <= w.time_s < end_s]
        times: dict[str, list[float]] = {}
        for w in inside:
            times.setdefault(w.word, []).append(round(w.time_s - start_s, 3))
        return " ".join(w.word for w in inside), times


def decode_text(raw: bytes) -> tuple[str, bool]:
    """A lyrics file's text: UTF-8 (a BOM allowed), else UTF-16 with a BOM, else Windows-1252
    (then Latin-1, which never fails). The flag says whether it was not UTF-8."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16"), True
    try:
        return raw.decode("utf-8-sig"), False
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp1252"), True
    except UnicodeDecodeError:
        return raw.decode("latin-1"), True


def _seconds(m: re.Match) -> float:
    return int(m.group(1)) * 60 + float(m.group(2).replace(":", "."))


def parse_lrc(text: str) -> SyncedLyrics | None:
    """The timed words of an LRC text; None when it has no timestamped line (plain text)."""
    offset_m = _OFFSET.search(text)
    shift = -int(offset_m.group(1)) / 1000.0 if offset_m else 0.0
    lines: list[tuple[float, str]] = []
    for raw in text.splitlines():
        stamps, rest = [], raw.strip()
        while (m := _STAMP.match(rest)) is not None:
            stamps.append(_seconds(m))
            rest = rest[m.end() :]
        for t in stamps:
            lines.append((t + shift, rest))
    if not lines:
        return None
    lines.sort(key=lambda x: x[0])
    return SyncedLyrics(_spread(lines, shift))


def _spread(lines: list[tuple[float, str]], shift: float) -> tuple[TimedWord, ...]:
    """Timed words of time-sorted lines; the last line lasts as long as a typical line."""
    gaps = sorted(b[0] - a[0] for a, b in zip(lines, lines[1:]) if b[0] > a[0])
    last = min(gaps[len(gaps) // 2], MAX_LINE_S) if gaps else MAX_LINE_S / 2
    words: list[TimedWord] = []
    for i, (t, body) in enumerate(lines):
        end = lines[i + 1][0] if i + 1 < len(lines) else t + last
        words += _line_words(t, min(end, t + MAX_LINE_S), body, shift)
    return tuple(sorted(words, key=lambda w: w.time_s))


def _line_words(start: float, end: float, body: str, shift: float) -> list[TimedWord]:
    """A line's words: enhanced-LRC ``<mm:ss.xx>`` times where given, else spread evenly."""
    out: list[TimedWord] = []
    parts = _WORD_STAMP.split(body)
    if len(parts) > 1:  # [text, m, s, text, m, s, text...]: a time stamps the text after it
        t = start
        for k in range(0, len(parts), 3):
            if k > 0:
                t = int(parts[k - 2]) * 60 + float(parts[k - 1].replace(":", ".")) + shift
            out += [TimedWord(w, t) for w in _WORD.findall(parts[k])]
        return out
    found = _WORD.findall(body)
    step = (max(end, start) - start) / max(len(found), 1)
    return [TimedWord(w, start + i * step) for i, w in enumerate(found)]


def from_sylt(entries: list[tuple[str, int]], unit: int, frame_s: float) -> SyncedLyrics | None:
    """ID3 ``SYLT`` ``(text, time)`` entries; ``unit`` 2 = milliseconds, 1 = MPEG frames
    (``frame_s`` seconds each). Each entry's words are spread to the next entry's time."""
    if not entries:
        return None
    scale = 0.001 if unit == 2 else frame_s
    words = _spread(sorted((t * scale, text) for text, t in entries), 0.0)
    return SyncedLyrics(words) if words else None
