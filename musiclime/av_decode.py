"""Windowed decoding of any audio FFmpeg reads, through PyAV (FFmpeg's libraries ship inside
the ``av`` wheel: no system ffmpeg).

Only the explained window is decoded. Positions are in samples at the stream's own rate,
counted from the first sample a full decode returns (``frame.pts - stream.start_time``), so
a window decoded after a seek is the same span of samples as in a full decode:

- Containers with a seek index (WAV, AIFF, FLAC, MP4/M4A, Ogg, Matroska/WebM, CAF, W64):
  seek to ``PREROLL_S`` before the window (lossy decoders need the frames before it: Opus
  80 ms, AAC and Vorbis one frame, MP3 its bit reservoir), decode, and drop what lies
  before the window. A seek that lands after the window's start falls back to decoding
  from the beginning.
- Everything else (MP3 and ADTS AAC: FFmpeg's MP3 seek is a Xing-TOC or bitrate guess;
  raw streams have no index): decode from the beginning and discard up to the window.
  Memory is the window's either way.

The middle is found from the header's length (``stream.duration``, else the container's).
Headers can lie (VBR without a Xing header, ADTS, a truncated download): when the stream
ends before the window is full, its true length is now known and the window is decoded
again, centred on it. A stream that ends before its header's stated length by more than
``TRUNCATION_SLACK_S`` gets the flag ``truncated``; a decoder error part-way keeps the
samples before it (also ``truncated``), and an error before any sample is a
``decode_error``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO

import numpy as np

from musiclime.errors import InputError

PREROLL_S = 0.5
TRUNCATION_SLACK_S = 1.0
# FFmpeg demuxer names whose seek lands at or before the asked time with exact timestamps
SEEKABLE = frozenset({"wav", "aiff", "flac", "mov,mp4,m4a,3gp,3g2,mj2", "ogg", "matroska,webm", "caf", "w64"})
# demuxers of real media containers: one with streams but none audio is ``no_audio_stream``
# (random bytes sometimes probe as a raw format with a "video" stream: those stay decode_error)
MEDIA_CONTAINERS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi", "asf", "ogg", "flv", "mpegts", "mpeg"})
# sample entries of protected MP4 audio (FairPlay ``drms``, common encryption ``enca``)
PROTECTED_ENTRIES = (b"drms", b"drma", b"enca")
_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


@dataclass
class Decoded:
    """A decoded window: ``audio`` float32 ``[channels, n]`` at ``sample_rate``."""

    audio: np.ndarray
    sample_rate: int
    flags: list[str]
    start_s: float  # where the window starts in the track
    duration_s: float  # the track's length as far as known (header, or the true end)
    decoder: str  # e.g. "ffmpeg:aac" (PyAV's codec name)


def decode_window(source: str | BinaryIO, max_seconds: float | None, name: str = "") -> Decoded:
    """The middle ``max_seconds`` of the first audio stream in ``source`` (a local path or a
    seekable binary file), or all of it when shorter or ``max_seconds`` is None.

    Raises:
        InputError: ``decode_error`` (not a media file, or nothing decodes),
            ``no_audio_stream`` (a media file without audio), ``encrypted`` (protected MP4).
    """
    import av

    try:
        container = av.open(source, metadata_errors="ignore")
    except Exception as e:  # av.error.InvalidDataError and friends: not a media file we can read
        raise InputError("decode_error", f"cannot decode {name}: {_reason(e)}") from None
    with container:
        fmt = container.format.name
        if "mp4" in fmt and _protected(source):
            raise InputError("encrypted", f"{name} is protected (DRM-encrypted MP4 audio): it cannot be decoded")
        if not container.streams.audio:
            if container.streams and fmt in MEDIA_CONTAINERS:
                raise InputError("no_audio_stream", f"{name} is a {fmt.split(',')[0]} file with no audio stream")
            raise InputError("decode_error", f"cannot decode {name}: no audio stream found")
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        sr = int(ctx.sample_rate or 0)
        if sr <= 0:
            raise InputError("decode_error", f"cannot decode {name}: no sample rate")
        stated = _stated_samples(container, stream, sr)
        reader = _Reader(container, stream, sr, fmt in SEEKABLE)
        keep = None if max_seconds is None else int(max_seconds * sr)
        start = 0 if keep is None or stated is None or stated <= keep else (stated - keep) // 2
        audio, end, broken = reader.read(start, keep)
        flags: list[str] = []
        true_len = end if (broken or keep is None or audio.shape[1] < keep) else None
        if true_len is not None and keep is not None and start > 0 and true_len < start + keep:
            # the header overstated the length: the true end is known now, centre on it
            start = max(0, (true_len - keep) // 2)
            audio, end, broken2 = reader.read(start, keep)
            broken = broken or broken2
        total = true_len if true_len is not None else stated
        if keep is not None and total is not None and total > keep:
            flags.append("cropped")
        if broken or (true_len is not None and stated is not None and stated - true_len > TRUNCATION_SLACK_S * sr):
            flags.append("truncated")
        if audio.shape[1] == 0 and broken:
            raise InputError("decode_error", f"cannot decode {name}: {reader.error}")
        duration = (true_len if true_len is not None else stated or end) / sr
        return Decoded(audio, sr, flags, start / sr, float(duration), f"ffmpeg:{ctx.name}")


class _Reader:
    """Decodes ``[start, start + keep)`` (stream samples) of one audio stream, seeking when
    the container allows it."""

    def __init__(self, container, stream, sr: int, seekable: bool):
        self.container, self.stream, self.sr, self.seekable = container, stream, sr, seekable
        self.tb = Fraction(stream.time_base) if stream.time_base else Fraction(1, sr)
        self.origin = stream.start_time or 0
        self.error = ""
        self.first_pass = True

    def _seek_to(self, sample: int) -> None:
        if sample <= 0:
            if not self.first_pass:
                self.container.seek(0, stream=self.stream, backward=True)
            return
        target = self.origin + int(Fraction(sample, self.sr) / self.tb)
        self.container.seek(max(0, target), stream=self.stream, backward=True, any_frame=False)

    def read(self, start: int, keep: int | None) -> tuple[np.ndarray, int, bool]:
        """``(audio [ch, n], end, broken)``: ``end`` is where decoding stopped (the stream's
        true length when it ran out), ``broken`` whether a decoder error stopped it."""
        preroll = int(PREROLL_S * self.sr)
        seek_at = start - preroll if self.seekable and start > preroll else 0
        self._seek_to(seek_at)
        self.first_pass = False
        got = self._collect(start, keep, seek_at)
        if got is None:  # the seek landed after the window's start: decode from the beginning
            self._seek_to(0)
            got = self._collect(start, keep, 0)
        return got if got is not None else (np.zeros((1, 0), np.float32), 0, True)

    def _collect(self, start: int, keep: int | None, seek_at: int):
        out = _Buffer(keep)
        pos, first = seek_at, True
        try:
            for packet in self.container.demux(self.stream):
                for frame in packet.decode():
                    if frame.pts is not None:
                        pos = int(round((frame.pts - self.origin) * self.tb * self.sr))
                    if first and seek_at > 0 and pos > start:
                        return None
                    first = False
                    data = _to_float(frame)
                    lo = max(start - pos, 0)
                    if lo < data.shape[1]:
                        out.add(data[:, lo:])
                    pos += data.shape[1]
                    if out.full:
                        return out.audio(), pos, False
        except Exception as e:  # a damaged packet: keep what decoded before it
            self.error = _reason(e)
            return out.audio(), max(pos, 0), True
        return out.audio(), max(pos, 0), False


class _Buffer:
    """Decoded samples, in one array of the window's size when it is known (the peak is the
    window, not the window plus its pieces)."""

    def __init__(self, keep: int | None):
        self.keep, self.n = keep, 0
        self.data: np.ndarray | None = None
        self.parts: list[np.ndarray] = []

    @property
    def full(self) -> bool:
        return self.keep is not None and self.n >= self.keep

    def add(self, x: np.ndarray) -> None:
        if self.keep is None:
            self.parts.append(x)
            self.n += x.shape[1]
            return
        if self.data is None:
            self.data = np.zeros((x.shape[0], self.keep), np.float32)
        m = min(x.shape[1], self.keep - self.n)
        ch = self.data.shape[0]
        self.data[:, self.n : self.n + m] = x[:ch, :m] if x.shape[0] >= ch else x[:1, :m]
        self.n += m

    def audio(self) -> np.ndarray:
        if self.keep is None:
            return _join(self.parts)
        return np.zeros((1, 0), np.float32) if self.data is None else self.data[:, : self.n]


def _join(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return np.zeros((1, 0), np.float32)
    ch = max(p.shape[0] for p in parts)
    parts = [p if p.shape[0] == ch else np.broadcast_to(p[:1], (ch, p.shape[1])) for p in parts]
    return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)


def _to_float(frame) -> np.ndarray:
    """A decoded frame as float32 ``[channels, n]``, scaled as libsndfile scales integers."""
    fmt = frame.format.name
    x = frame.to_ndarray()
    if not frame.format.is_planar:
        x = x.reshape(-1, len(frame.layout.channels)).T
    base = fmt.rstrip("p")
    if base in _SCALE:
        x = x.astype(np.float32) if base != "u8" else x.astype(np.float32) - 128.0
        return x * np.float32(1.0 / _SCALE[base])
    return x.astype(np.float32, copy=False)


def _stated_samples(container, stream, sr: int) -> int | None:
    """The length the header states, in samples (an estimate for VBR/ADTS; None if unknown)."""
    if stream.duration:
        return int(stream.duration * Fraction(stream.time_base) * sr)
    if container.duration:
        return int(container.duration * sr // 1_000_000)
    return None


def _protected(source) -> bool:
    """Whether an MP4's audio sample entries are protected (``drms``/``enca``, or a ``sinf``
    box in one): read from the box tree, headers only, plus the ``stsd`` payloads."""
    f = open(source, "rb") if isinstance(source, str) else source
    try:
        here = f.tell()
        f.seek(0)
        return _walk(f, 0, None, 0)
    except (OSError, ValueError):
        return False
    finally:
        if f is not source:
            f.close()
        else:
            f.seek(here)


_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}


def _walk(f, start: int, end: int | None, depth: int) -> bool:
    pos = start
    while end is None or pos + 8 <= end:
        f.seek(pos)
        head = f.read(8)
        if len(head) < 8:
            return False
        size, kind = int.from_bytes(head[:4], "big"), head[4:]
        body = pos + 8
        if size == 1:
            size, body = int.from_bytes(f.read(8), "big"), pos + 16
        elif size == 0:
            size = (end or 1 << 62) - pos
        if size < 8 or depth > 8:
            return False
        if kind in _CONTAINERS and _walk(f, body, pos + size, depth + 1):
            return True
        if kind == b"stsd":
            f.seek(body)
            entries = f.read(min(size - (body - pos), 1 << 16))
            if any(tag in entries for tag in PROTECTED_ENTRIES + (b"sinf",)):
                return True
        pos += size
    return False


def _reason(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:300]


def probe(source: str | BinaryIO, name: str = "") -> tuple[int, int | None]:
    """``(sample_rate, stated length in samples)`` of the first audio stream, from the header.

    Raises:
        InputError: ``decode_error`` when ``source`` is not a media file with audio.
    """
    import av

    try:
        with av.open(source, metadata_errors="ignore") as c:
            if not c.streams.audio or not c.streams.audio[0].codec_context.sample_rate:
                raise InputError("decode_error", f"cannot decode {name}: no audio stream found")
            s = c.streams.audio[0]
            sr = int(s.codec_context.sample_rate)
            return sr, _stated_samples(c, s, sr)
    except InputError:
        raise
    except Exception as e:
        raise InputError("decode_error", f"cannot decode {name}: {_reason(e)}") from None
